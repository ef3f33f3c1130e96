"""The calculator plugin whatever the input (hypothesis): any text or numbers are answered or refused, decimals
add and multiply exactly, integer expressions equal Python's, malformed literals warn nothing."""

import warnings
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.tools.arithmetic.expressions import MAX_EXPRESSION_LENGTH
from services.tools.arithmetic.operations import MAX_BITS
from tests.tools.calculator_helpers import calculate, calculator

# --- properties -----------------------------------------------------------------------------------------------------

FAST = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

#: Characters expressions are made of, so generated strings reach the parser and evaluator, not only the filter.
EXPRESSION_ALPHABET = "0123456789.e+-*/^%()  ,sqrtabdminxlogpc\N{MULTIPLICATION SIGN}\N{MINUS SIGN}\N{DIVISION SIGN}"


def _refused_or_answered(expression: str) -> None:
    try:
        calculate(expression)
    except InvalidArgument:
        pass


@FAST
@given(st.text(max_size=120))
def test_any_text_is_answered_or_refused(expression: str) -> None:
    _refused_or_answered(expression)


@FAST
@given(st.text(alphabet=EXPRESSION_ALPHABET, max_size=60))
def test_any_arithmetic_looking_text_is_answered_or_refused(expression: str) -> None:
    _refused_or_answered(expression)


NUMBERS = st.floats() | st.integers(min_value=-(10**40), max_value=10**40)


@FAST
@given(st.sampled_from(["add", "subtract", "multiply", "divide", "power"]), NUMBERS, NUMBERS)
def test_any_numbers_are_answered_or_refused(operation: str, x: float, y: float) -> None:
    try:
        calculator.execute(operation=operation, x=x, y=y)
    except InvalidArgument:
        pass


def _exact(value: float) -> Fraction:
    return Fraction(value) if isinstance(value, int) else Fraction(Decimal(repr(value)))


@FAST
@given(
    st.sampled_from(["add", "subtract", "multiply"]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_sums_and_products_of_decimals_are_exact(operation: str, x: float, y: float) -> None:
    a, b = _exact(x), _exact(y)
    expected = {"add": a + b, "subtract": a - b, "multiply": a * b}[operation]
    result = calculator.execute(operation=operation, x=x, y=y).result
    assert Fraction(result if isinstance(result, str) else repr(result)) == expected


#: A generated expression: its text, and its value by Python's integer arithmetic (None once a step is too large).
Generated = tuple[str, int | None]


def _bounded(value: int | None) -> int | None:
    return None if value is None or value.bit_length() > MAX_BITS else value


def _binary(parts: tuple[Generated, str, Generated]) -> Generated:
    (left, a), sign, (right, b) = parts
    if a is None or b is None:
        value = None
    elif sign == "+":
        value = a + b
    elif sign in "-\N{MINUS SIGN}":
        value = a - b
    else:
        value = a * b
    return f"({left}) {sign} ({right})", _bounded(value)


def _power(parts: tuple[Generated, int, str]) -> Generated:
    (base, a), exponent, sign = parts
    # The calculator refuses before computing when |exponent| times floor(log2 |base|) passes the bound; so does this.
    too_big = a is None or (abs(a) > 1 and exponent * (abs(a).bit_length() - 1) > MAX_BITS)
    return f"({base}){sign}{exponent}", None if too_big else _bounded(a**exponent)  # type: ignore[operator]


def _negate(part: Generated) -> Generated:
    text, value = part
    return f"-({text})", None if value is None else -value


INTEGER_EXPRESSIONS = st.recursive(
    st.integers(min_value=-(10**20), max_value=10**20).map(lambda n: (str(n), n)),
    lambda children: (
        st.tuples(
            children, st.sampled_from(["+", "-", "*", "\N{MINUS SIGN}", "\N{MULTIPLICATION SIGN}"]), children
        ).map(_binary)
        | st.tuples(children, st.integers(min_value=0, max_value=5), st.sampled_from(["^", "**"])).map(_power)
        | children.map(_negate)
    ),
    max_leaves=12,
)


@FAST
@given(INTEGER_EXPRESSIONS)
def test_integer_expressions_equal_pythons_integer_arithmetic(generated: Generated) -> None:
    expression, value = generated
    if len(expression) > MAX_EXPRESSION_LENGTH:
        with pytest.raises(InvalidArgument, match="too long"):
            calculate(expression)
    elif value is None:
        with pytest.raises(InvalidArgument, match=r"too large|nested too deeply"):
            calculate(expression)
    else:
        try:
            result, text = calculate(expression)
        except InvalidArgument as exc:  # only nesting may refuse a value within the bounds
            assert "nested too deeply" in str(exc)
            return
        assert result == (value if abs(value) <= 2**53 else str(value))
        assert text.endswith(f" = {value}")


@pytest.mark.parametrize("expression", ["1and 2", "0x1for", "1in 2", "0o7and 1"])
def test_a_malformed_literal_is_refused_without_a_warning_on_stderr(expression: str) -> None:
    # Python's parser warns (SyntaxWarning) about such literals before refusing them; the model gets the refusal,
    # and the service's log gets nothing, whatever filters the process has set.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InvalidArgument, match="syntax"):
            calculate(expression)
    assert [str(warning.message) for warning in caught] == []

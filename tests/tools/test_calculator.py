"""The calculator plugin: the seed's operations, exact results, expressions, every refusal, and the bounds."""

import math
import warnings
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.tools.arithmetic.expressions import MAX_DEPTH, MAX_EXPRESSION_LENGTH
from services.tools.arithmetic.operations import MAX_BITS, MAX_DIGITS
from services.tools.plugins.calculator import CalculatorTool
from tests.support.seed import SEED_CALCULATOR_SCHEMA

calculator = CalculatorTool()


def calculate(expression: str) -> tuple[object, str]:
    """The result and the text of an expression."""
    output = calculator.execute(operation="expression", expression=expression)
    return output.result, output.text


# --- the seed's operations ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "x", "y", "result", "text"),
    [
        ("add", 5.0, 10.0, 15, "5 + 10 = 15"),
        ("multiply", 15.0, 3.0, 45, "15 * 3 = 45"),
        ("subtract", 2.0, 7.5, -5.5, "2 - 7.5 = -5.5"),
        ("divide", 10.0, 4.0, 2.5, "10 / 4 = 2.5"),
        ("power", 2.0, 10.0, 1024, "2^10 = 1024"),
    ],
)
def test_each_operation_gives_the_number_and_the_seed_text(
    operation: str, x: float, y: float, result: float, text: str
) -> None:
    output = calculator.execute(operation=operation, x=x, y=y)
    assert output.result == result
    assert output.text == text


def test_integral_floats_from_protobuf_are_shown_as_ints() -> None:
    output = calculator.execute(operation="add", x=5.0, y=10.0)
    assert isinstance(output.result, int)
    assert ".0" not in output.text


def test_a_fraction_without_a_finite_decimal_is_exact_and_shows_its_decimals() -> None:
    # Before issue 9 the result was the double 0.333…; now it is the exact value, as a string.
    output = calculator.execute(operation="divide", x=1.0, y=3.0)
    assert output.result == "1/3"
    assert output.text == "1 / 3 = 0.33333333333333333333… (exactly 1/3)"


def test_a_negative_base_is_shown_in_parentheses() -> None:
    assert calculator.execute(operation="power", x=-2.0, y=2.0).text == "(-2)^2 = 4"


def test_division_by_zero_is_the_callers_mistake() -> None:
    with pytest.raises(InvalidArgument, match=r"division by zero: y must not be 0"):
        calculator.execute(operation="divide", x=1.0, y=0.0)


@pytest.mark.parametrize(("operation", "x", "y"), [("power", 10.0, 2000.0), ("power", 1e308, 1e308)])
def test_overflow_says_the_result_is_too_large(operation: str, x: float, y: float) -> None:
    with pytest.raises(InvalidArgument, match="too large"):
        calculator.execute(operation=operation, x=x, y=y)


def test_what_overflowed_a_double_is_now_exact() -> None:
    output = calculator.execute(operation="multiply", x=1e308, y=10.0)
    assert output.result == "1" + "0" * 309


def test_a_negative_base_with_a_fractional_exponent_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="not a real number"):
        calculator.execute(operation="power", x=-8.0, y=0.5)


def test_zero_to_a_negative_power_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="0 cannot be raised to a negative power"):
        calculator.execute(operation="power", x=0.0, y=-1.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_numbers_must_be_finite(bad: float) -> None:
    with pytest.raises(InvalidArgument, match="finite"):
        calculator.execute(operation="add", x=bad, y=1.0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"operation": "modulo", "x": 1, "y": 2}, "unknown operation 'modulo'"),
        ({"operation": "add", "x": 1}, "takes the numbers x and y"),
        ({"operation": "add", "x": 1, "y": 2, "expression": "1"}, "no expression"),
        ({"operation": "add", "x": True, "y": 2}, "x must be a number"),
        ({"operation": "add", "x": 1, "y": "2"}, "y must be a number"),
        ({"operation": "expression"}, "needs the argument expression"),
        ({"operation": "expression", "expression": "x + 1", "x": 1}, "takes only expression"),
        ({"operation": "expression", "expression": 12}, "expression must be a string"),
    ],
)
def test_arguments_that_do_not_fit_the_operation(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        calculator.execute(**arguments)  # type: ignore[arg-type]


def test_schema_is_the_seeds_plus_the_expression_operation() -> None:
    schema = calculator.get_schema()
    assert schema == SEED_CALCULATOR_SCHEMA
    properties = schema["function"]["parameters"]["properties"]
    assert properties["operation"]["enum"][:5] == ["add", "multiply", "subtract", "divide", "power"]
    assert properties["x"] == {"type": "number", "description": "First number"}
    assert properties["y"] == {"type": "number", "description": "Second number"}


# --- exactness ------------------------------------------------------------------------------------------------------


def test_two_to_the_53_plus_one_is_exact() -> None:
    assert calculate("2^53+1") == ("9007199254740993", "2^53+1 = 9007199254740993")
    output = calculator.execute(operation="add", x=2**53, y=1)
    assert output.result == "9007199254740993"


def test_two_to_the_53_is_still_a_number() -> None:
    assert calculate("2^53") == (9007199254740992, "2^53 = 9007199254740992")


def test_decimals_are_the_decimals_written() -> None:
    assert calculate("0.1 + 0.2") == (0.3, "0.1 + 0.2 = 0.3")
    output = calculator.execute(operation="add", x=0.1, y=0.2)
    assert (output.result, output.text) == (0.3, "0.1 + 0.2 = 0.3")
    assert calculate("0.1 * 3 - 0.3")[0] == 0


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("12345678901234567890 * 98765432109876543210", str(12345678901234567890 * 98765432109876543210)),
        ("2^100", str(2**100)),
        ("-(2^64)", str(-(2**64))),
        ("1.1 * 1.1", 1.21),
        ("1 / 8", 0.125),
        ("1e-30", 1e-30),
        ("1.23456789012345678", "1.23456789012345678"),
        ("2^-20", 9.5367431640625e-07),
        ("2^-70", "8.470329472543003390683225006796419620513916015625E-22"),
        ("1/3 * 3", 1),
        ("sqrt(16/9)", "4/3"),
        ("4^0.5", 2),
        ("8^(2/3)", 4),
        ("(-8)^(1/3)", -2),
        ("(10^500)^0.5", "1" + "0" * 250),
        ("1^(10^100)", 1),
        ("(-1)^(10^100 + 1)", -1),
        ("0^(10^100)", 0),
    ],
)
def test_exact_results(expression: str, result: object) -> None:
    assert calculate(expression)[0] == result


def test_a_string_result_reads_back_as_the_exact_value() -> None:
    result, text = calculate("10^30 / 7")
    assert Fraction(str(result)) == Fraction(10**30, 7)
    assert text.endswith(f"(exactly {10**30}/7)")


@pytest.mark.parametrize(
    ("expression", "approximately"),
    [("sqrt(2)", math.sqrt(2)), ("2^0.5", math.sqrt(2)), ("pi", math.pi), ("exp(1)", math.e), ("log10(1000)", 3.0),
     ("sin(pi / 2)", 1.0), ("log(8, 2)", 3.0), ("ln(e)", 1.0), ("cos(0)", 1.0), ("tan(0)", 0.0), ("log2(8)", 3.0),
     ("(-2)^(1/3)", -(2 ** (1 / 3))), ("sqrt(2) * sqrt(2)", 2.0)],
)  # fmt: skip
def test_approximate_results_are_labelled(expression: str, approximately: float) -> None:
    result, text = calculate(expression)
    assert isinstance(result, float) and result == pytest.approx(approximately)
    assert text.endswith("(approximate)")


# --- expressions ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("2^3^2", 512),
        ("2**3**2", 512),
        ("(2^3)^2", 64),
        ("-2^2", -4),
        ("(-2)^2", 4),
        ("2 * -3", -6),
        ("--3", 3),
        ("+3", 3),
        ("10 - 4 - 3", 3),
        ("100 / 10 / 5", 2),
        ("7 // 2", 3),
        ("-7 % 3", 2),
        ("((1 + 2) * (3 + 4)) / 7", 3),
        ("  6 * 7  ", 42),
        ("6 \N{MULTIPLICATION SIGN} 7", 42),
        ("84 \N{DIVISION SIGN} 2", 42),
        ("5 \N{MINUS SIGN} 8", -3),
        ("\N{MINUS SIGN}2^2", -4),
        ("2\N{MIDDLE DOT}3", 6),
        ("abs(-3)", 3),
        ("round(2.5)", 3),
        ("round(-2.5)", -3),
        ("round(1.005, 2)", 1.01),
        ("round(1234, -2)", 1200),
        ("floor(-2.5)", -3),
        ("ceil(2.1)", 3),
        ("min(3, 1, 2)", 1),
        ("max(3, 1, 2)", 3),
        ("sqrt(144) + abs(-1)", 13),
        ("+".join(str(n) for n in range(250)), sum(range(250))),
    ],
)
def test_expressions(expression: str, result: object) -> None:
    assert calculate(expression)[0] == result


def test_the_text_repeats_the_expression() -> None:
    assert calculate(" (2 + 3) * 4 ")[1] == "(2 + 3) * 4 = 20"


# --- errors ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1/0", r"division by zero \(at position 2\)"),
        ("1 + 2/0", r"division by zero \(at position 6\)"),
        ("2 ^ (1 \N{DIVISION SIGN} 0)", r"division by zero \(at position 8\)"),
        ("1 // 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("1/(2-2)", "division by zero"),
        ("0^-1", "0 cannot be raised to a negative power"),
        ("1 / (0.1 * 0)", "division by zero"),
        ("log(8, 1)", "base of log"),
    ],
)
def test_division_by_zero(expression: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        calculate(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("2 +* 3", "syntax error at position 4"),
        ("(1 + 2", r"syntax error at position 1: '\(' was never closed"),
        ("2pi", "syntax error at position 1"),
        ("1 2", "syntax error at position 3"),
        ("1 +", "syntax error at the end"),
        ("2 * (3 \N{MINUS SIGN} 1", r"syntax error at position 5: '\(' was never closed"),
        ("", "the expression is empty"),
        ("   ", "the expression is empty"),
        ("2 + 3 @ 4", "unexpected character '@' at position 7"),
        ("'1' + 1", "unexpected character"),
        ("1 < 2", "unexpected character '<'"),
        ("[1]", "unexpected character"),
        ("1, 2", "unsupported syntax at position 1: a list of values"),
        ("1 if 2 else 3", "unsupported syntax at position 1: if/else"),
        ("pi.real", r"unsupported syntax at position 1: an attribute"),
        ("1 and 2", "unsupported syntax"),
        ("min(x for x in y)", "unsupported syntax"),
        ("...", "only numbers are allowed"),
        ("True", "only numbers are allowed"),
        ("2j", "imaginary numbers are not supported"),
    ],
)
def test_syntax_errors_say_where(expression: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        calculate(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("foo(1)", "unknown function 'foo' at position 1; known functions: sqrt"),
        ("1 + x", "unknown name 'x' at position 5; known functions"),
        ("__import__(1)", "unknown function '__import__'"),
        ("sqrt + 1", r"sqrt is a function at position 1: call it as sqrt\(...\)"),
        ("sqrt(1, 2)", r"sqrt takes 1 argument\(s\), got 2"),
        ("min()", r"min takes 1 or more argument\(s\), got 0"),
        ("round(1, 2, 3)", r"round takes 1 to 2 argument\(s\), got 3"),
        ("min(*1)", "plain arguments"),
        ("(1)(2)", "only named functions can be called"),
        ("round(2.5, 0.5)", "must be an exact integer"),
    ],
)
def test_unknown_functions_and_names(expression: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        calculate(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("(-4)^0.5", "not a real number"),
        ("sqrt(-1)", "not a real number: sqrt of a negative number"),
        ("log(0)", "log is defined only for positive numbers"),
        ("ln(-1)", "log is defined only for positive numbers"),
        ("log10(0)", "log is defined only for positive numbers"),
        ("(-2.0)^sqrt(2)", "not a real number"),
        ("exp(1000)", "too large"),
        ("sqrt(2) * 10^400", "too large"),
        ("sin(10^400)", "too large"),
        ("2^0.5 ^ 10000", "too large"),
    ],
)
def test_undefined_and_overflowing_approximate_results(expression: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        calculate(expression)


# --- bounds: each refused at once, before the work it would take --------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "10^10^10",
        "9^9^9^9",
        "2^(10^100)",
        "(1/2)^(10^100)",
        "0.5^-100000",
        f"2^{MAX_BITS + 1}",
        f"10^{MAX_DIGITS + 1}",
        f"1/10^{MAX_DIGITS + 1}",
        "9" * 500 + "^3",
        f"1e{MAX_DIGITS + 1}",
        "1e999999999",
        "1e-999999999",
        f"(10^{MAX_DIGITS - 1}) * (10^{MAX_DIGITS - 1})",
        "4^(10^100 + 0.5)",
        "round(1, 10^100)",
    ],
)
def test_huge_numbers_are_refused(expression: str) -> None:
    with pytest.raises(InvalidArgument, match=r"too large|between"):
        calculate(expression)


def test_the_largest_numbers_allowed_are_exact() -> None:
    assert calculate(f"10^{MAX_DIGITS} - 1")[0] == "9" * MAX_DIGITS
    assert calculate("9" * 990 + " + 1")[0] == "1" + "0" * 990


def test_a_long_expression_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=f"too long: at most {MAX_EXPRESSION_LENGTH} characters"):
        calculate("1+" * MAX_EXPRESSION_LENGTH + "1")


@pytest.mark.parametrize(
    "expression",
    ["-" * (MAX_DEPTH + 1) + "1", "sqrt(" * (MAX_DEPTH + 1) + "4" + ")" * (MAX_DEPTH + 1), "2^" * 150 + "1"],
)
def test_deep_nesting_is_refused(expression: str) -> None:
    with pytest.raises(InvalidArgument, match="nested too deeply"):
        calculate(expression)


def test_nesting_past_pythons_parser_is_a_syntax_error() -> None:
    with pytest.raises(InvalidArgument, match="too many nested parentheses"):
        calculate("(" * 300 + "1" + ")" * 300)


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

"""The calculator plugin: the seed's operations and its schema, and exact results.

Expressions, their refusals and the bounds are in test_calculator_expressions.py, properties over any input in
test_calculator_properties.py."""

import math
from fractions import Fraction

import pytest

from services.common.errors import InvalidArgument
from tests.support.seed import SEED_CALCULATOR_SCHEMA
from tests.tools.calculator_helpers import calculate, calculator

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

"""The calculator plugin: each operation, number formatting and its refusals."""

import pytest

from services.common.errors import InvalidArgument
from services.tools.plugins.calculator import CalculatorTool
from tests.support.seed import SEED_CALCULATOR_SCHEMA


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
    output = CalculatorTool().execute(operation=operation, x=x, y=y)
    assert output.result == result
    assert output.text == text


def test_integral_floats_from_protobuf_are_shown_as_ints() -> None:
    output = CalculatorTool().execute(operation="add", x=5.0, y=10.0)
    assert isinstance(output.result, int)
    assert ".0" not in output.text


def test_fractions_keep_their_decimals() -> None:
    output = CalculatorTool().execute(operation="divide", x=1.0, y=3.0)
    assert output.result == pytest.approx(1 / 3)
    assert output.text.startswith("1 / 3 = 0.333")


def test_division_by_zero_is_the_callers_mistake() -> None:
    with pytest.raises(InvalidArgument, match=r"division by zero: y must not be 0"):
        CalculatorTool().execute(operation="divide", x=1.0, y=0.0)


@pytest.mark.parametrize(("operation", "x", "y"), [("power", 10.0, 400.0), ("multiply", 1e308, 10.0)])
def test_overflow_says_the_result_is_too_large(operation: str, x: float, y: float) -> None:
    with pytest.raises(InvalidArgument, match="too large"):
        CalculatorTool().execute(operation=operation, x=x, y=y)


def test_a_negative_base_with_a_fractional_exponent_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="not a real number"):
        CalculatorTool().execute(operation="power", x=-8.0, y=0.5)


def test_schema_is_exactly_the_seeds() -> None:
    assert CalculatorTool().get_schema() == SEED_CALCULATOR_SCHEMA

"""Arithmetic in words becomes calculator steps; tool answers become numbers again."""

import pytest

from services.demo_model.arithmetic import (
    CalculationStep,
    StepResult,
    describe_step,
    format_number,
    parse_calculation,
    parse_tool_number,
)


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("add 2 and 3", [CalculationStep("add", 2, 3)]),
        ("add 2 to 3", [CalculationStep("add", 2, 3)]),
        ("10-3", [CalculationStep("subtract", 10, 3)]),
        ("5 -3", [CalculationStep("subtract", 5, 3)]),
        ("-3 + 4", [CalculationStep("add", -3, 4)]),
        ("what is 2.5 plus .5", [CalculationStep("add", 2.5, 0.5)]),
        ("5x3", [CalculationStep("multiply", 5, 3)]),
        ("7 multiplied by 6", [CalculationStep("multiply", 7, 6)]),
        ("2 ** 8", [CalculationStep("power", 2, 8)]),
        ("what is the product of 4 and 5", [CalculationStep("multiply", 4, 5)]),
        (
            "What is 5 + 10, then multiply by 3?",
            [CalculationStep("add", 5, 10), CalculationStep("multiply", StepResult(0), 3)],
        ),
        (
            "multiply 2 by 3 and add 4",
            [CalculationStep("multiply", 2, 3), CalculationStep("add", StepResult(0), 4)],
        ),
        (
            "add 1 and 2; subtract 4 from it",
            [CalculationStep("add", 1, 2), CalculationStep("subtract", StepResult(0), 4)],
        ),
        (
            "2 + 3, then raise it to the power of 2",
            [CalculationStep("add", 2, 3), CalculationStep("power", StepResult(0), 2)],
        ),
        ("2 + 3 * 4", [CalculationStep("multiply", 3, 4), CalculationStep("add", 2, StepResult(0))]),
        ("2 ^ 3 ^ 2", [CalculationStep("power", 3, 2), CalculationStep("power", 2, StepResult(0))]),
        ("8 - 2 - 1", [CalculationStep("subtract", 8, 2), CalculationStep("subtract", StepResult(0), 1)]),
        ("add 1 and 2 and 3", [CalculationStep("add", 1, 2), CalculationStep("add", StepResult(0), 3)]),
    ],
)
def test_parse_calculation(text: str, steps: list[CalculationStep]) -> None:
    assert parse_calculation(text) == steps


@pytest.mark.parametrize(
    "text",
    ["hello", "what is 7?", "I have 3 cats and 2 dogs", "multiply by 3", "what is x", "5 +", "add it and 3", ""],
)
def test_not_a_calculation(text: str) -> None:
    assert parse_calculation(text) == []


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("5 + 10 = 15", 15),
        ("15 * 3 = 45.0", 45),
        ("10 / 4 = 2.5", 2.5),
        ("a = b = -7", -7),
        (" 42 ", 42),
        ("1e3", 1000),
    ],
)
def test_parse_tool_number(text: str, number: float) -> None:
    assert parse_tool_number(text) == number


@pytest.mark.parametrize("text", ["no number here", "= nothing", "the answer is 5"])
def test_parse_tool_number_without_a_number(text: str) -> None:
    assert parse_tool_number(text) is None


def test_format_and_describe() -> None:
    assert format_number(45.0) == "45" and format_number(2.5) == "2.5" and format_number(1 / 3) == "0.333333333333"
    assert describe_step("add", 5, 10) == "add 5 and 10"
    assert describe_step("add", 15, 1, it_is_x=True) == "add 1 to it"
    assert describe_step("subtract", 10, 3) == "subtract 3 from 10"
    assert describe_step("divide", 15, 3, it_is_x=True) == "divide it by 3"
    assert describe_step("power", 2, 10) == "raise 2 to the power of 10"

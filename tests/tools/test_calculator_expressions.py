"""The calculator plugin's expressions: what they compute, every refusal (division by zero, syntax, unknown names,
undefined results), and the bounds, each refused at once before the work it would take."""

import pytest

from services.common.errors import InvalidArgument
from services.tools.arithmetic.expressions import MAX_DEPTH, MAX_EXPRESSION_LENGTH
from services.tools.arithmetic.operations import MAX_BITS, MAX_DIGITS
from tests.tools.calculator_helpers import calculate

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

"""Helpers of the calculator plugin's tests (test_calculator, test_calculator_expressions,
test_calculator_properties): one calculator, and an expression's result and text."""

from services.tools.plugins.calculator import CalculatorTool

calculator = CalculatorTool()


def calculate(expression: str) -> tuple[object, str]:
    """The result and the text of an expression."""
    output = calculator.execute(operation="expression", expression=expression)
    return output.result, output.text

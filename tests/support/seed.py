"""Facts of the seed design (shared/design/architecture-seed.md) that tests check the code against.

Written out here, not imported from the code, so a test fails if the implementation drifts from the seed.
"""

#: The seed's worked example: two calculator calls, 5 + 10 = 15 then 15 * 3 = 45.
SEED_QUESTION = "What is 5 + 10, then multiply by 3?"

#: The calculator's function schema exactly as the seed's CalculatorTool sends it to the model.
SEED_CALCULATOR_SCHEMA = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Performs basic arithmetic operations",
        "parameters": {
            "type": "object",
            "properties": {
                "operation": {
                    "type": "string",
                    "enum": ["add", "multiply", "subtract", "divide", "power"],
                    "description": "The arithmetic operation to perform",
                },
                "x": {"type": "number", "description": "First number"},
                "y": {"type": "number", "description": "Second number"},
            },
            "required": ["operation", "x", "y"],
        },
    },
}

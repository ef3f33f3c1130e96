"""The functions and constants a calculator expression may use (sqrt, round, log, sin, pi, ...), each exact where
it can be and approximate (a float) where it cannot. Used by services.tools.arithmetic.expressions, which calls
them, and by the calculator tool, which names them in its description."""

import math
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

from services.tools.arithmetic.operations import (
    MAX_DIGITS,
    Number,
    Problem,
    approximately,
    as_float,
    checked,
    power,
)


def _round_half_away(value: Fraction) -> Fraction:
    """The nearest integer, halves away from zero (2.5 -> 3, -2.5 -> -3), as people round."""
    magnitude = math.floor(abs(value) + Fraction(1, 2))
    return Fraction(magnitude if value >= 0 else -magnitude)


def _round(value: Number, digits: Number = Fraction(0)) -> Number:
    """round(x) or round(x, digits): half away from zero; digits may be negative (round(1234, -2) = 1200)."""
    if not (isinstance(digits, Fraction) and digits.denominator == 1):
        raise Problem("round's second argument (the number of decimals) must be an exact integer")
    if abs(digits) > MAX_DIGITS:
        raise Problem(f"round's number of decimals must be between -{MAX_DIGITS} and {MAX_DIGITS}")
    scale = Fraction(10) ** int(digits)
    if isinstance(value, Fraction):
        return checked(_round_half_away(value * scale) / scale)
    exact = Fraction(Decimal(repr(value)))
    return approximately(lambda: float(_round_half_away(exact * scale) / scale))


def _sqrt(value: Number) -> Number:
    if value < 0:
        raise Problem("not a real number: sqrt of a negative number")
    return power(value, Fraction(1, 2))


def _floor(value: Number) -> Number:
    return Fraction(math.floor(value)) if isinstance(value, Fraction) else float(math.floor(value))


def _ceil(value: Number) -> Number:
    return Fraction(math.ceil(value)) if isinstance(value, Fraction) else float(math.ceil(value))


def _natural_log(value: Number) -> float:
    """ln(value), also for fractions beyond the double range (ints of any size have a logarithm in Python)."""
    if value <= 0:
        raise Problem("log is defined only for positive numbers")
    if isinstance(value, float):
        return math.log(value)
    return math.log(value.numerator) - math.log(value.denominator)


def _log(value: Number, base: Number | None = None) -> float:
    if base is None:
        return _natural_log(value)
    if base <= 0 or base == 1:
        raise Problem("the base of log must be positive and not 1")
    return approximately(lambda: _natural_log(value) / _natural_log(base))


def _log_with(log: Callable[[float], float]) -> Callable[[Number], float]:
    """log10 or log2 of a value, exact-integer parts taken separately (math.log10(1000) is exactly 3.0)."""

    def compute(value: Number) -> float:
        if value <= 0:
            raise Problem("log is defined only for positive numbers")
        if isinstance(value, float):
            return log(value)
        return log(value.numerator) - log(value.denominator)

    return compute


def _approximate(function: Callable[[float], float]) -> Callable[[Number], float]:
    """A math function on one double; its result is approximate."""
    return lambda value: approximately(lambda: function(as_float(value)))


def _min(*values: Number) -> Number:
    return min(values)


def _max(*values: Number) -> Number:
    return max(values)


#: Functions an expression may call: name -> (fewest arguments, most arguments or None for any, function).
FUNCTIONS: dict[str, tuple[int, int | None, Callable[..., Number]]] = {
    "sqrt": (1, 1, _sqrt),
    "abs": (1, 1, abs),
    "round": (1, 2, _round),
    "floor": (1, 1, _floor),
    "ceil": (1, 1, _ceil),
    "min": (1, None, _min),
    "max": (1, None, _max),
    "log": (1, 2, _log),
    "ln": (1, 1, _natural_log),
    "log10": (1, 1, _log_with(math.log10)),
    "log2": (1, 1, _log_with(math.log2)),
    "exp": (1, 1, _approximate(math.exp)),
    "sin": (1, 1, _approximate(math.sin)),
    "cos": (1, 1, _approximate(math.cos)),
    "tan": (1, 1, _approximate(math.tan)),
}
#: Names an expression may use; both are irrational, so approximate.
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

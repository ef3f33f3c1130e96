"""Exact and approximate arithmetic on the calculator's numbers, within bounds.

A number is an exact Fraction, or a float once something approximate took part (a root that is not rational, log,
exp, sin, cos, tan, pi, e). Every result is checked against MAX_DIGITS, and powers are refused before they are
computed when their size would pass it (10^10^10 is refused at once). A problem (division by zero, too large) is a
`Problem` whose message says which; the callers turn it into InvalidArgument with where it happened. Used by the
calculator tool and by services.tools.arithmetic's functions and expressions.
"""

import math
from collections.abc import Callable
from fractions import Fraction

#: Most decimal digits of any number met in a calculation (numerator and denominator each), results and
#: intermediates alike. It bounds memory and the cost of each operation; Python's own limit on converting an int
#: to text is 4300 digits, well above what formatting a result of this size needs.
MAX_DIGITS = 1000
#: MAX_DIGITS in bits, the unit the checks use (int.bit_length is free; counting digits is not).
MAX_BITS = math.ceil(MAX_DIGITS * math.log2(10))
#: A value during a calculation: an exact Fraction, or a float once something approximate took part.
Number = Fraction | float


class Problem(Exception):
    """An arithmetic problem (division by zero, too large, ...) found while computing; the message says which."""


def too_large() -> Problem:
    """The problem of a number past MAX_DIGITS."""
    return Problem(f"the number is too large: it would need more than {MAX_DIGITS} digits")


def checked(value: Number) -> Number:
    """`value` if it is within the bounds: a finite float, or a fraction of at most MAX_DIGITS digits each side."""
    if isinstance(value, float):
        return checked_float(value)
    return checked_fraction(value)


def checked_float(value: float) -> float:
    """`value` if it is finite (an approximate result past the double range is too large)."""
    if not math.isfinite(value):
        raise too_large()
    return value + 0.0  # -0.0 becomes 0.0


def checked_fraction(value: Fraction) -> Fraction:
    """`value` if its numerator and denominator have at most MAX_DIGITS digits each."""
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
        raise too_large()
    return value


def as_float(value: Number) -> float:
    """`value` as a double, for the approximate functions; a fraction beyond the double range is too large."""
    try:
        return float(value)
    except OverflowError:
        raise too_large() from None


def approximately(compute: Callable[[], float]) -> float:
    """Run an approximate (float) computation, turning Python's overflow into the calculator's message."""
    try:
        return checked_float(compute())
    except OverflowError:
        raise too_large() from None
    except ZeroDivisionError:
        raise Problem("division by zero") from None


def add(a: Number, b: Number) -> Number:
    """a + b."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return checked(a + b)
    return approximately(lambda: as_float(a) + as_float(b))


def subtract(a: Number, b: Number) -> Number:
    """a - b."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return checked(a - b)
    return approximately(lambda: as_float(a) - as_float(b))


def multiply(a: Number, b: Number) -> Number:
    """a times b. Both factors are bounded, so the product (twice the bound at most) is cheap, then checked."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return checked(a * b)
    return approximately(lambda: as_float(a) * as_float(b))


def divide(a: Number, b: Number) -> Number:
    """a ÷ b, exact: 1 / 3 is one third."""
    if b == 0:
        raise Problem("division by zero")
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return checked(a / b)
    return approximately(lambda: as_float(a) / as_float(b))


def floor_divide(a: Number, b: Number) -> Number:
    """a // b: the largest integer not above a ÷ b."""
    if b == 0:
        raise Problem("division by zero")
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return checked(Fraction(a // b))
    return approximately(lambda: float(as_float(a) // as_float(b)))


def modulo(a: Number, b: Number) -> Number:
    """a % b, with the sign of b (as Python does)."""
    if b == 0:
        raise Problem("division by zero")
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return checked(a % b)
    return approximately(lambda: as_float(a) % as_float(b))


def _integer_root(n: int, k: int) -> int | None:
    """The integer r with r**k == n (n >= 0, k >= 2), or None when there is none."""
    if n < 2:
        return n
    if k >= n.bit_length():  # 2**k > n, so only 0 and 1 have an integer k-th root
        return None
    x = 1 << -(-n.bit_length() // k)  # above the root; Newton's steps then decrease to it
    while True:
        y = ((k - 1) * x + n // x ** (k - 1)) // k
        if y >= x:
            return x if x**k == n else None
        x = y


def _integer_power(base: Fraction, exponent: int) -> Fraction:
    """base ** exponent exactly, refused before computing when the result could not fit the bounds."""
    if base == 0:
        if exponent < 0:
            raise Problem("0 cannot be raised to a negative power (division by zero)")
        return Fraction(1 if exponent == 0 else 0)
    if base in (1, -1):
        return Fraction(1 if base == 1 or exponent % 2 == 0 else -1)
    # A lower bound on the result's size in bits: |exponent| times floor(log2) of the larger side of the fraction
    # (at least 1, since |base| is neither 0 nor 1). Past the bound, refuse without computing: 10^10^10 is instant.
    log2_floor = max(base.numerator.bit_length(), base.denominator.bit_length()) - 1
    if abs(exponent) * max(log2_floor, 1) > MAX_BITS:
        raise too_large()
    return checked_fraction(base**exponent)


def power(a: Number, b: Number) -> Number:
    """a ^ b: exact for integer exponents and for rational roots that are rational (4^0.5, (-8)^(1/3)); else float."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        if b.denominator == 1:
            return _integer_power(a, b.numerator)
        p, q = b.numerator, b.denominator
        if a < 0 and q % 2 == 0:
            raise Problem("not a real number: a negative base needs an integer exponent or an odd root")
        if a == 0:
            if p < 0:
                raise Problem("0 cannot be raised to a negative power (division by zero)")
            return Fraction(0)
        numerator_root = _integer_root(abs(a.numerator), q)
        denominator_root = _integer_root(a.denominator, q)
        if numerator_root is not None and denominator_root is not None:
            root = Fraction(numerator_root, denominator_root) * (1 if a > 0 else -1)
            return _integer_power(root, p)
        sign = -1.0 if a < 0 and p % 2 == 1 else 1.0
        magnitude = abs(a)
        try:
            as_double = float(magnitude)
        except OverflowError:
            as_double = math.inf
        if 0 < as_double < math.inf:
            return approximately(lambda: sign * as_double ** float(b))  # correctly rounded for sqrt(2)
        # A base beyond the double range, via logarithms: (10^500)^0.5 is within it.
        log_magnitude = math.log(magnitude.numerator) - math.log(magnitude.denominator)
        return approximately(lambda: sign * math.exp(float(b) * log_magnitude))
    x, y = as_float(a), as_float(b)
    if x == 0 and y < 0:
        raise Problem("0 cannot be raised to a negative power (division by zero)")
    if x < 0 and not y.is_integer():
        raise Problem("not a real number: a negative base needs an integer exponent or an odd root")
    return approximately(lambda: x**y)


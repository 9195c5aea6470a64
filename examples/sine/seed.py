"""Seed program for the sine example: an odd polynomial for sin(x) on [0, pi/2], badly tuned on purpose.

The search may rewrite the EVOLVE block; the frozen `approximate` below it must keep working.
Constants written `NAME = number  # range [lo, hi]` are what the offline mutator's `perturb` tunes.
"""


# EVOLVE-BLOCK-START coefficients
C1 = 1.0  # range [0.8, 1.2]
C3 = 0.0  # range [-0.4, 0.4]
C5 = 0.0  # range [-0.04, 0.04]


def polynomial(x: float) -> float:
    """c1 x + c3 x^3 + c5 x^5, evaluated by Horner's rule in x^2."""
    x2 = x * x
    return x * (C1 + x2 * (C3 + x2 * C5))
# EVOLVE-BLOCK-END


def approximate(x: float) -> float:
    """The entry point the task calls, once per grid point."""
    return float(polynomial(x))

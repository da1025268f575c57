"""Fractions as the tables, the HTML report and its figures show them: percents, a dash where none."""

import math

MISSING = "—"


def percent(value: float | None) -> float:
    """A fraction in [0, 1] as a percent; None (nothing measured) as NaN, which a figure leaves blank."""
    return math.nan if value is None else 100 * value


def percent_text(value: float | None) -> str:
    """A fraction as a percent with 2 decimals; None or NaN (nothing measured, an empty class) as a dash."""
    shown = percent(value)
    return MISSING if math.isnan(shown) else f"{shown:.2f}"

import math

from cisctool.report.numbers import MISSING, percent, percent_text


def test_a_fraction_is_shown_as_a_percent_with_two_decimals():
    assert percent(0.25) == 25.0
    assert percent_text(0.1234) == "12.34"
    assert percent_text(1) == "100.00"


def test_nothing_measured_is_blank_in_a_figure_and_a_dash_in_a_table():
    assert math.isnan(percent(None))
    assert percent_text(None) == MISSING == "—"
    assert percent_text(math.nan) == MISSING  # an empty class's IoU

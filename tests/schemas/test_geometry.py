"""Crop windows: the square a region is described on, and a box in its coordinates."""

from __future__ import annotations

import pytest

from schemas.geometry import box_in_window, square_window


def test_a_square_window_holds_the_box_and_its_margin_centred():
    # a 20 x 10 box at (100, 50): its longer side 20, plus 20% each side -> a 28-pixel square
    assert square_window((100, 50, 120, 60), (320, 240), 0.2) == (96, 41, 124, 69)
    assert square_window((100, 50, 120, 60), (320, 240), 0.0) == (100, 45, 120, 65)


def test_a_square_window_is_clipped_to_the_image():
    assert square_window((0, 0, 10, 10), (320, 240), 0.5) == (0, 0, 15, 15)  # 20 wide, its left half cut
    assert square_window((310, 230, 320, 240), (320, 240), 1.0) == (300, 220, 320, 240)


def test_a_degenerate_box_still_has_a_pixel():
    x1, y1, x2, y2 = square_window((50, 50, 50, 50), (320, 240), 0.0)
    assert x2 - x1 >= 1 and y2 - y1 >= 1
    x1, y1, x2, y2 = square_window((320, 240, 320, 240), (320, 240), 0.0)  # on the far edge
    assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240


def test_a_negative_margin_is_refused():
    with pytest.raises(ValueError, match="margin must be >= 0"):
        square_window((0, 0, 10, 10), (320, 240), -0.1)


def test_a_box_in_its_window_is_shifted_and_clipped():
    assert box_in_window((100, 50, 120, 60), (96, 41, 124, 69)) == (4, 9, 24, 19)
    assert box_in_window((90, 50, 130, 60), (96, 41, 124, 69)) == (0, 9, 28, 19)

"""The world's vocabulary: object categories, colours, sizes, fill patterns, backgrounds, words."""

from __future__ import annotations

CATEGORIES = (
    "circle", "square", "triangle", "star", "diamond", "hexagon", "cross",
    "house", "tree", "car", "flower", "boat", "sign",
)  # fmt: skip
"""Simple shapes first, then composite objects drawn from several primitives."""

PLURALS = {"cross": "crosses", "sign": "signs"}
COMPOSITE = {"house", "tree", "car", "flower", "boat", "sign"}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 180),
    "pink": (245, 130, 190),
    "brown": (130, 80, 40),
    "black": (25, 25, 25),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "cyan": (40, 200, 210),
}

SIZES = ("small", "medium", "large")
SIZE_FRACTION = {"small": (0.14, 0.22), "medium": (0.22, 0.34), "large": (0.34, 0.48)}
"""Object side as a fraction of the image's shorter side."""

PATTERNS = ("solid", "striped", "dotted", "checkered")
PATTERN_WORDS = {"solid": "", "striped": "striped", "dotted": "dotted", "checkered": "checkered"}

BACKGROUNDS = ("flat", "gradient", "noise", "stripes")
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "beige": (225, 215, 190),
    "light blue": (190, 215, 240),
    "light green": (200, 235, 200),
    "light gray": (210, 210, 210),
    "lavender": (225, 215, 240),
}

SIGN_WORDS = (
    "STOP", "OPEN", "EXIT", "CAFE", "SALE", "PARK", "HOTEL", "BUS", "TAXI", "SHOP",
    "BANK", "SCHOOL", "POST", "ZOO", "MUSEUM", "BAKERY", "FARM", "GATE", "NORTH", "SOUTH",
)  # fmt: skip


def plural(category: str) -> str:
    return PLURALS.get(category, category + "s")


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

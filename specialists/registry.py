"""Specialists by name, so that the engine's configuration chooses them. A new specialist is one
module in ``specialists/`` and one line here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from specialists.base import Specialist


def _yolo(**options):
    from specialists.yolo import YoloConfig, YoloDetector

    return YoloDetector(YoloConfig(**options))


def _sam(**options):
    from specialists.sam import SamConfig, SamSegmenter

    return SamSegmenter(SamConfig(**options))


def _grabcut(**options):
    from specialists.sam import GrabCutConfig, GrabCutSegmenter

    return GrabCutSegmenter(GrabCutConfig(**options))


def _rapidocr(**options):
    from specialists.ocr import RapidOcrConfig, RapidOcrReader

    return RapidOcrReader(RapidOcrConfig(**options))


def _florence2(**options):
    from specialists.florence2 import Florence2Config, Florence2Specialist

    return Florence2Specialist(Florence2Config(**options))


def _label_grounder(**options):
    from specialists.label_grounder import LabelGrounderConfig, LabelMatchGrounder

    return LabelMatchGrounder(LabelGrounderConfig(**options))


REGISTRY: dict[str, Callable[..., Specialist]] = {
    "yolo": _yolo,
    "sam": _sam,
    "grabcut": _grabcut,
    "rapidocr": _rapidocr,
    "florence2": _florence2,
    "label-grounder": _label_grounder,
}


def build(name: str, **options: Any) -> Specialist:
    """The specialist registered as ``name``, configured with ``options`` (its config's fields)."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown specialist {name!r}; known: {', '.join(REGISTRY)}") from None
    try:
        return factory(**options)
    except TypeError as err:
        raise ValueError(f"bad options for specialist {name!r}: {err}") from None

"""Specialists by name, so that the engine's configuration chooses them. A new specialist is one
module in ``specialists/``, one trainer in ``specialists/training/`` and one line here. A name of
the form ``package.module:factory`` builds a specialist from outside this package (a plugin): the
factory takes the options as keywords and returns a ``Specialist``."""

from __future__ import annotations

import importlib
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


def known() -> str:
    return ", ".join(REGISTRY) + " (or a plugin as package.module:factory)"


def factory_of(name: str) -> Callable[..., Specialist]:
    """The factory registered as ``name``, or imported from ``package.module:factory``."""
    if name in REGISTRY:
        return REGISTRY[name]
    module, _, attr = name.partition(":")
    if not module or not attr:
        raise ValueError(f"unknown specialist {name!r}; known: {known()}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"specialist plugin {name!r} cannot be imported ({err}); known: {known()}") from None


def build(name: str, **options: Any) -> Specialist:
    """The specialist registered as ``name``, configured with ``options`` (its config's fields)."""
    factory = factory_of(name)
    try:
        return factory(**options)
    except TypeError as err:
        raise ValueError(f"bad options for specialist {name!r}: {err}") from None

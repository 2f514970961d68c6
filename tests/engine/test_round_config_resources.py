"""A round config's actors reserve what each specialist declares unless the config says otherwise."""

from __future__ import annotations

import pytest

from engine.round.config import SpecialistSpec


def test_declared_resources_are_the_default():
    assert SpecialistSpec("grabcut").resources() == (1.0, 0.0)
    assert SpecialistSpec("yolo", {"device": "cuda:0"}).resources() == (1.0, 1.0)  # a GPU detector asks for a GPU
    assert SpecialistSpec("yolo", {"device": "cuda:0"}, gpus=0.5).resources() == (1.0, 0.5)
    assert SpecialistSpec("rapidocr", cpus=0.5).resources() == (0.5, 0.0)


def test_bad_resources_and_options_are_refused():
    with pytest.raises(ValueError, match="cpus > 0"):
        SpecialistSpec("yolo", cpus=0)
    with pytest.raises(ValueError, match="bad options for specialist 'yolo'"):
        SpecialistSpec("yolo", {"nope": 1}).resources()

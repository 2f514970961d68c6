"""Shared fixtures: a small world made once per test session (worlds are deterministic)."""

from __future__ import annotations

import pytest

from engine.world.config import WorldConfig
from engine.world.make import make_world


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """30 images (9 seed, 15 pool, 6 gold) drawn in one process."""
    return make_world(WorldConfig(images=30, seed=7), tmp_path_factory.mktemp("world"), workers=1)

"""``fld world``: the synthetic world, images with known ground truth (the embedded default)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import USER_ERRORS, JsonOption, fail
from cli.progress import progress_bar
from cli.render import print_json, print_table
from engine.world.config import WorldConfig
from engine.world.make import make_world


def world_make(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create the world in.")],
    images: Annotated[int, typer.Option("--images", "-n", help="Number of images (split into seed, pool, gold).")] = 200,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Random seed; the same seed gives the same world.")] = 0,
    width: Annotated[int, typer.Option(help="Image width in pixels.")] = 320,
    height: Annotated[int, typer.Option(help="Image height in pixels.")] = 240,
    overwrite: Annotated[bool, typer.Option(help="Replace a world already in --out.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Draw a synthetic world: images on disk plus their exact ground truth.

    Makes OUT/images/{seed,pool,gold}/, OUT/truth (seed and pool truth, a dataset) and
    OUT/gold (the gold truth, read only by the evaluator).
    """
    try:
        config = WorldConfig(images=images, seed=seed, width=width, height=height)
        with progress_bar("drawing", config.images) as advance:
            world = make_world(config, out, overwrite=overwrite, progress=advance)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    counts = config.split_counts()
    if as_json:
        print_json({"out": str(world.root), "version": world.version, "splits": counts})
        return
    print_table(["split", "images", "folder"],
                [(s, n, str(world.images(s))) for s, n in counts.items()],
                title=f"world {world.version} in {world.root}")

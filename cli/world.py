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
from engine.world.shift import parse_overrides, shift_named


def world_make(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create the world in.")],
    images: Annotated[int, typer.Option("--images", "-n", help="Number of images (split into seed, pool, gold).")] = 200,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Random seed; the same seed gives the same world.")] = 0,
    domain_seed: Annotated[int | None, typer.Option("--domain-seed", help="Draws the domains (default: --seed); "
                                                    "worlds that share it share their seed domain.")] = None,
    width: Annotated[int, typer.Option(help="Image width in pixels.")] = 320,
    height: Annotated[int, typer.Option(help="Image height in pixels.")] = 240,
    shift: Annotated[str, typer.Option(help="Domain shift of the pool and gold from the seed: none, mild, field, harsh.")] = "none",
    shift_set: Annotated[list[str] | None, typer.Option("--shift-set", help="Set one shift parameter, e.g. blur=2 "
                                                        "(repeatable; see docs/WORLD.md for their ranges).")] = None,
    seed_fraction: Annotated[float, typer.Option(help="Share of images in the seed split (labelled, seed domain).")] = 0.3,
    gold_fraction: Annotated[float, typer.Option(help="Share in the gold split (target domain's held-out truth).")] = 0.2,
    seed_gold_fraction: Annotated[float, typer.Option("--seed-gold-fraction",
                                  help="Share in the seed-gold split (the seed domain's held-out truth).")] = 0.0,
    overwrite: Annotated[bool, typer.Option(help="Replace a world already in --out.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Draw a synthetic world: images on disk plus their exact ground truth.

    Makes OUT/images/{seed,pool,gold}/, OUT/truth (seed and pool truth, a dataset) and
    OUT/gold (the gold truth, read only by the evaluator); with --seed-gold-fraction also
    OUT/seed-gold. With --shift, the pool and gold come from a shifted target domain.
    """
    try:
        config = WorldConfig(images=images, seed=seed, domain_seed=domain_seed, width=width, height=height, seed_fraction=seed_fraction,
                             gold_fraction=gold_fraction, seed_gold_fraction=seed_gold_fraction,
                             shift=shift_named(shift, **parse_overrides(shift_set or [])))
        with progress_bar("drawing", config.images) as advance:
            world = make_world(config, out, overwrite=overwrite, progress=advance)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    counts = config.split_counts()
    if as_json:
        print_json({"out": str(world.root), "version": world.version, "splits": counts, "shift": config.shift.to_dict()})
        return
    print_table(["split", "images", "folder"],
                [(s, n, str(world.images(s))) for s, n in counts.items()],
                title=f"world {world.version} in {world.root} (shift: {config.shift.name})")

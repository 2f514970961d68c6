"""``fld world make``: draw a world's images to disk and write its ground truth.

    <out>/world.json                 config, counts and version of the world
    <out>/images/<split>/NNNNNN.png  the images (some JPEG), split into seed / pool / gold
    <out>/truth/                     a dataset of the seed and pool truth (round 0)
    <out>/gold/                      the gold truth, kept apart: only the evaluator reads it
    <out>/seed-gold/                 the seed domain's held-out truth (when the world has one)

The seed and seed-gold splits are drawn from the seed domain, the pool and gold splits from the
target domain (``engine.world.shift``: the same as the seed's unless the world has a shift).

Image ``i`` is drawn from its own generator (``seed``, ``i``), so worlds are identical whatever
the number of worker processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.dataset.store import Store, StoreError
from engine.world.config import WorldConfig
from engine.world.describe import describe
from engine.world.draw import render
from engine.world.sample import sample_scene
from engine.world.shift import capture, encode
from engine.world.truth import truth_rows
from schemas import schema_for
from schemas.hashing import content_id, fingerprint

log = logging.getLogger(__name__)

WORLD_VERSION = "1"
"""Bump when drawing or describing changes, so a world's version says how it was made."""
MANIFEST = "world.json"
CHUNK = 64
TRUTH_TABLES = ("texts", "regions", "triplets")


@dataclass
class World:
    """A world on disk: where its parts are."""

    root: Path
    config: WorldConfig
    version: str

    @property
    def truth(self) -> Path:
        return self.root / "truth"

    @property
    def gold(self) -> Path:
        return self.root / "gold"

    def images(self, split: str) -> Path:
        return self.root / "images" / split

    @classmethod
    def open(cls, root: str | Path) -> World:
        root = Path(root)
        manifest = root / MANIFEST
        if not manifest.is_file():
            raise StoreError(f"{root} is not a world (no {MANIFEST}); make one with `fld world make`")
        meta = json.loads(manifest.read_text())
        return cls(root, WorldConfig(**meta["config"]), meta["version"])

    def missing(self) -> list[str]:
        """The images its truth and gold name that are not where they name them (a world copied or
        moved from elsewhere names the old place)."""
        stores = [self.truth, self.gold, *([self.seed_gold] if self.seed_gold else [])]
        return [uri for store in stores for uri in Store(store).read("images", columns=["uri"]).column("uri").to_pylist()
                if not Path(uri).is_file()]

    def in_place(self) -> bool:
        """Every image its truth and gold name is where they name it (else: draw it again where it is)."""
        return not self.missing()

    @property
    def seed_gold(self) -> Path | None:
        """The seed domain's held-out truth, when the world has a ``seed-gold`` split."""
        path = self.root / "seed-gold"
        return path if path.is_dir() else None


def assign_splits(config: WorldConfig) -> list[str]:
    """The split of each image index: a seeded permutation cut into gold, seed, seed-gold and pool."""
    counts = config.split_counts()
    order = np.random.default_rng([config.seed, 2**31]).permutation(config.images)
    cuts = np.cumsum([counts["gold"], counts["seed"], counts.get("seed-gold", 0)])
    names = ("gold", "seed", "seed-gold", "pool")
    splits = [""] * config.images
    for rank, index in enumerate(order):
        splits[index] = names[int(np.searchsorted(cuts, rank, side="right"))]
    return splits


def _draw_chunk(config: WorldConfig, indices: list[int], splits: list[str], root: str, version: str):
    """Draw and save images ``indices``; return their image rows and truth rows."""
    images, truth = [], {t: [] for t in TRUTH_TABLES}
    for i, split in zip(indices, splits):
        rng = np.random.default_rng([config.seed, i])
        domain = config.domain(split)
        scene = sample_scene(rng, config, domain)
        pixels = render(scene, rng, domain.shift.clutter if domain.shift else 0)
        jpeg = rng.random() < config.jpeg_fraction
        quality = 92
        if domain.shift:
            pixels = capture(pixels, rng, domain.shift)
            if domain.shift.jpeg_quality:
                jpeg, quality = True, domain.shift.jpeg_quality
        data = encode(pixels, jpeg, quality)
        path = Path(root) / "images" / split / f"{i:06d}.{'jpg' if jpeg else 'png'}"
        path.write_bytes(data)
        image_id = content_id(data)
        images.append({"image_id": image_id, "uri": str(path), "width": config.width, "height": config.height,
                       "format": "JPEG" if jpeg else "PNG", "split": split, "status": "ok", "error": None,
                       "round": 0})
        for table, rows in truth_rows(image_id, scene, describe(scene, rng), version).items():
            truth[table].extend(rows)
    return images, truth


def existing_world(out: str | Path, config: WorldConfig) -> World | None:
    """The world of ``config`` already drawn at ``out`` (None when there is none, or another). A run
    folder names its world's images, its dataset's and its models by absolute paths, so the world
    of a folder moved or copied from elsewhere is refused, naming an image it has lost, rather than
    failing later in a gold measurement."""
    if not (Path(out) / MANIFEST).is_file():
        return None
    world = World.open(out)
    if world.config != config:
        return None
    if gone := world.missing():
        raise StoreError(f"{out} holds this world, but {len(gone)} of the images its truth and gold name are not "
                         f"there (first: {gone[0]}): was the folder moved or copied from elsewhere? A run's folder "
                         "names its images and models by absolute paths; put it back, or run again with a new --out")
    return world


def make_world(config: WorldConfig, out: str | Path, overwrite: bool = False, workers: int | None = None,
               progress: Callable[[int], None] | None = None) -> World:
    """Draw ``config.images`` scenes into ``out`` and write their truth; returns the world."""
    root = Path(out).expanduser().absolute()
    _prepare(root, overwrite)
    version = fingerprint({"world": WORLD_VERSION, "config": config.to_dict()})
    splits = assign_splits(config)
    names = list(config.split_counts())
    for split in names:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
    chunks = [list(range(s, min(s + CHUNK, config.images))) for s in range(0, config.images, CHUNK)]
    workers = workers or min(os.cpu_count() or 1, len(chunks))
    stores = {"truth": ("seed", "pool"), "gold": ("gold",), "seed-gold": ("seed-gold",)}
    stores = {folder: held for folder, held in stores.items() if any(s in names for s in held)}
    seen: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        writers = {folder: stack.enter_context(Store(root / folder, create=True).writer(0)) for folder in stores}
        results = _run(chunks, splits, config, root, version, workers)
        for n, (chunk, (images, truth)) in enumerate(zip(chunks, results)):
            for row in images:
                if row["image_id"] in seen:
                    raise RuntimeError(f"{row['uri']} has the same content as {seen[row['image_id']]}")
                seen[row["image_id"]] = row["uri"]
            split_of = {r["image_id"]: r["split"] for r in images}
            for folder, held in stores.items():
                keep = lambda r: split_of[r["image_id"]] in held  # noqa: E731
                writers[folder].write("images", n, _table("images", [r for r in images if keep(r)]))
                for table, rows in truth.items():
                    writers[folder].write(table, n, _table(table, [r for r in rows if keep(r)]))
            if progress:
                progress(len(chunk))
    counts = {s: splits.count(s) for s in names}
    manifest = {"version": version, "world_version": WORLD_VERSION, "config": config.to_dict(), "splits": counts}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    log.info("world of %d images in %s: %s", config.images, root, counts)
    return World(root, config, version)


def _run(chunks, splits, config, root, version, workers):
    jobs = [(config, c, [splits[i] for i in c], str(root), version) for c in chunks]
    if workers <= 1:
        yield from (_draw_chunk(*job) for job in jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_draw_chunk, *zip(*jobs))


def _table(table: str, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema_for(table))


def _prepare(root: Path, overwrite: bool) -> None:
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise StoreError(f"{root} already exists and is not empty; pass --overwrite to replace a world")
        if not (root / MANIFEST).is_file():
            raise StoreError(f"{root} is not empty and not a world made by fld; refusing to overwrite it")
        for part in ("images", "truth", "gold", "seed-gold", MANIFEST):
            target = root / part
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    root.mkdir(parents=True, exist_ok=True)

"""What an export takes: one round's annotations, filtered by split and family, and the rules
every export shares (the output path must be new unless overwriting; nothing empty is written)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.store import Store, StoreError
from schemas import schema_for

FAMILIES = ("text", "object", "ocr", "region_caption", "grounding")
"""``text``: descriptions; ``object``/``ocr``/``region_caption``: regions of that kind;
``grounding``: text-phrase-region triplets."""


@dataclass
class Selection:
    round: int
    images: pa.Table
    texts: pa.Table
    regions: pa.Table
    triplets: pa.Table
    families: tuple[str, ...]

    @property
    def uris(self) -> dict[str, str]:
        return dict(zip(self.images.column("image_id").to_pylist(), self.images.column("uri").to_pylist()))

    @property
    def sizes(self) -> dict[str, tuple[int, int]]:
        ids = self.images.column("image_id").to_pylist()
        return {i: (int(w), int(h)) for i, w, h in zip(ids, self.images.column("width").to_pylist(),
                                                          self.images.column("height").to_pylist())}

    def rows(self) -> int:
        return self.texts.num_rows + self.regions.num_rows + self.triplets.num_rows


def select(store: Store, round_id: int, splits: tuple[str, ...] = ("pool",), families: tuple[str, ...] = FAMILIES) -> Selection:
    """Round ``round_id``'s annotations on images of ``splits``; a clear error for a round that
    does not exist or holds nothing of what was asked."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; known: {', '.join(FAMILIES)}")
    rounds = sorted(set(store.rounds("texts")) | set(store.rounds("regions")) | set(store.rounds("triplets")))
    if round_id not in rounds:
        raise StoreError(f"round {round_id} does not exist in {store.root} (rounds with annotations: "
                         f"{', '.join(map(str, rounds)) or 'none'})")
    images = store.read("images")
    images = images.filter(pc.and_(pc.is_in(images.column("split"), pa.array(splits, pa.string())),
                                   pc.equal(images.column("status"), "ok")))
    ids = pa.array(images.column("image_id").to_pylist(), pa.string())
    on = lambda t: t.filter(pc.is_in(t.column("image_id"), ids))  # noqa: E731
    texts = on(store.read("texts", round_id)) if "text" in families else schema_for("texts").empty_table()
    regions = on(store.read("regions", round_id))
    kinds = [f for f in families if f in ("object", "ocr", "region_caption")]
    regions = regions.filter(pc.is_in(regions.column("kind"), pa.array(kinds, pa.string())))
    triplets = on(store.read("triplets", round_id)) if "grounding" in families else schema_for("triplets").empty_table()
    selection = Selection(round_id, images, texts, regions, triplets, tuple(families))
    if selection.rows() == 0:
        raise StoreError(f"round {round_id} has no annotations of {', '.join(families)} on images of split(s) "
                         f"{', '.join(splits)}: nothing to export")
    return selection


def prepare_output(path: Path, overwrite: bool, is_dir: bool) -> Path:
    """Refuses an existing ``path`` unless ``overwrite``; then clears it."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    (path if is_dir else path.parent).mkdir(parents=True, exist_ok=True)
    return path

"""Keeping the gold split out of training.

Image ids are content hashes, so a gold image is recognised even when copied under another name.
Every path that hands rows to a trainer goes through ``GoldGuard.check``; a leak is an error,
never a warning.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.store import Store


GOLD_SPLITS = ("gold", "seed-gold")
"""Splits held out for evaluation: the target domain's gold and the seed domain's."""


class GoldLeakError(RuntimeError):
    """Gold-split images were about to be used for something other than evaluation."""


class GoldGuard:
    def __init__(self, gold_ids: Iterable[str]):
        self.gold_ids = frozenset(gold_ids)

    @classmethod
    def from_stores(cls, *stores: Store) -> GoldGuard:
        """Gold ids of datasets and gold-truth stores: their images of the ``GOLD_SPLITS``."""
        ids: set[str] = set()
        for store in stores:
            images = store.read("images", columns=["image_id", "split"])
            ids.update(images.filter(pc.is_in(images.column("split"), pa.array(GOLD_SPLITS))).column("image_id").to_pylist())
        return cls(ids)

    def check(self, image_ids: Iterable[str], purpose: str = "training") -> None:
        leaked = sorted(set(image_ids) & self.gold_ids)
        if leaked:
            raise GoldLeakError(
                f"{len(leaked)} image(s) of the gold split are in the {purpose} data "
                f"(e.g. {', '.join(leaked[:3])}); the gold split is only for evaluation"
            )

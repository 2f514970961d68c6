"""``fld diff --from R --to S``: what changed between two rounds' annotations, per family and image.

Regions of each kind (objects, OCR text, region captions) and triplets are matched per image by
box, ignoring their labels (greedy by IoU >= ``iou``, highest score first): a matched pair whose
label (or phrase) differs is ``changed``, one whose box overlaps its old self by less than
``moved_iou`` is ``moved``; what is left is ``added`` (only in S) or ``removed`` (only in R).
Descriptions are matched by image and granularity: ``changed`` when the text differs. The round
summaries' change counts (``engine.loop.summary``) and the report's most-changed images come from
here too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import pyarrow.compute as pc

from engine.dataset.store import Store, StoreError
from schemas.geometry import match_boxes, rows_by_image

KINDS = ("object", "ocr", "region_caption")
CHANGES = ("added", "removed", "changed", "moved")


@dataclass(frozen=True)
class Change:
    image_id: str
    family: str
    """A region kind (``object``, ``ocr``, ``region_caption``), ``texts/<granularity>`` or ``triplets``."""
    change: str
    """``added``, ``removed``, ``changed`` (label, phrase or text) or ``moved`` (box)."""
    before: str | None = None
    after: str | None = None
    iou: float | None = None
    row_before: str | None = None
    row_after: str | None = None


@dataclass(frozen=True)
class RoundDiff:
    from_round: int
    to_round: int
    changes: list[Change] = field(default_factory=list)

    def _tally(self, key: str) -> dict[str, dict[str, int]]:
        out: dict[str, Counter] = {}
        for c in self.changes:
            out.setdefault(getattr(c, key), Counter())[c.change] += 1
        return {k: {change: counts.get(change, 0) for change in CHANGES} for k, counts in sorted(out.items())}

    def by_family(self) -> dict[str, dict[str, int]]:
        return self._tally("family")

    def by_image(self) -> dict[str, dict[str, int]]:
        return self._tally("image_id")

    def to_dict(self) -> dict:
        return {"from": self.from_round, "to": self.to_round, "families": self.by_family(), "images": self.by_image(),
                "changes": [asdict(c) for c in self.changes]}


def _boxed(family: str, before: list[dict], after: list[dict], key: str, id_key: str, iou: float,
           moved_iou: float) -> list[Change]:
    out = []
    matches = match_boxes(after, before, iou, same_label=False) if before and after else []
    for i, j, overlap in matches:
        a, b = after[i], before[j]
        if (a[key] or "") != (b[key] or ""):
            out.append(Change(a["image_id"], family, "changed", b[key], a[key], overlap, b[id_key], a[id_key]))
        elif overlap < moved_iou:
            out.append(Change(a["image_id"], family, "moved", b[key], a[key], overlap, b[id_key], a[id_key]))
    matched_after, matched_before = {i for i, _, _ in matches}, {j for _, j, _ in matches}
    out += [Change(a["image_id"], family, "added", None, a[key], None, None, a[id_key])
            for i, a in enumerate(after) if i not in matched_after]
    out += [Change(b["image_id"], family, "removed", b[key], None, None, b[id_key], None)
            for j, b in enumerate(before) if j not in matched_before]
    return out


def rounds_with_rows(store: Store) -> list[int]:
    return sorted({r for t in ("rounds", "texts", "regions", "triplets") for r in store.rounds(t)})


def diff_rounds(store: Store, from_round: int, to_round: int, iou: float = 0.5, moved_iou: float = 0.9,
                families: tuple[str, ...] | None = None) -> RoundDiff:
    """Every change from round ``from_round`` to round ``to_round`` (``families``: only those)."""
    if not 0.0 < iou <= moved_iou <= 1.0:
        raise ValueError(f"need 0 < iou <= moved_iou <= 1, got {iou} / {moved_iou}")
    known = rounds_with_rows(store)
    missing = [r for r in (from_round, to_round) if r not in known]
    if missing:
        raise StoreError(f"round {missing[0]} does not exist in {store.root} (rounds: "
                         f"{', '.join(map(str, known)) or 'none'})")
    wanted = lambda family: families is None or family in families or family.split("/")[0] in families  # noqa: E731
    changes: list[Change] = []
    regions = [store.read("regions", r) for r in (from_round, to_round)]
    for kind in KINDS:
        if not wanted(kind):
            continue
        before, after = (rows_by_image(t.filter(pc.equal(t.column("kind"), kind))) for t in regions)
        for image in sorted(set(before) | set(after)):
            changes += _boxed(kind, before.get(image, []), after.get(image, []), "label", "region_id", iou, moved_iou)
    if wanted("triplets"):
        before, after = (rows_by_image(store.read("triplets", r)) for r in (from_round, to_round))
        for image in sorted(set(before) | set(after)):
            changes += _boxed("triplets", before.get(image, []), after.get(image, []), "phrase", "triplet_id", iou,
                              moved_iou)
    if wanted("texts"):
        texts = [{(r["image_id"], r["granularity"]): r for r in store.read("texts", k).to_pylist()}
                 for k in (from_round, to_round)]
        for key in sorted(set(texts[0]) | set(texts[1])):
            b, a = texts[0].get(key), texts[1].get(key)
            family = f"texts/{key[1]}"
            if a and b and a["text"] != b["text"]:
                changes.append(Change(key[0], family, "changed", b["text"], a["text"], None, b["text_id"], a["text_id"]))
            elif a and not b:
                changes.append(Change(key[0], family, "added", None, a["text"], None, None, a["text_id"]))
            elif b and not a:
                changes.append(Change(key[0], family, "removed", b["text"], None, None, b["text_id"], None))
    return RoundDiff(from_round, to_round, changes)

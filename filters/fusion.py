"""Cross-specialist fusion by IoU merge, as All-Seeing (AS-1B) and GLaMM (GranD) do: scores of
different models are not comparable, so overlapping regions from different specialists become
one fused region that keeps every member's label, score and provenance, scored by the number of
specialists that agree. A region no other specialist confirms passes unchanged (or is dropped,
when ``min_agreement`` asks for more)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchvision.ops import box_iou

from filters.decision import Decision
from filters.regions import boxes_of, scores_of
from schemas import schema_for
from schemas.hashing import fingerprint

SPECIALIST = "fusion"
REREAD = "-reread"
"""The end of the region_id of a row that reads again another specialist's region (Florence-2
reading RapidOCR's text lines): the rest is that region's id. Such a row confirms that region and
goes where it goes (``unconfirmed``): where the round drops the region, the re-read does not stand
alone for it."""


@dataclass(frozen=True)
class FusionConfig:
    iou: float = 0.5
    min_agreement: int = 1
    kinds: tuple[str, ...] = ("object",)
    priority: tuple[str, ...] = ()
    """Specialists whose label, mask and quad win ties, first first (others alphabetically after)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.iou <= 1.0:
            raise ValueError(f"iou must be within (0, 1], got {self.iou}")
        if self.min_agreement < 1:
            raise ValueError(f"min_agreement must be >= 1, got {self.min_agreement}")

    @property
    def version(self) -> str:
        return fingerprint({"fusion": 1, "iou": self.iou, "min_agreement": self.min_agreement,
                            "priority": list(self.priority)})


def _rank(specialist: str, priority: tuple[str, ...]) -> tuple[int, str]:
    return (priority.index(specialist) if specialist in priority else len(priority), specialist)


def clusters(boxes: np.ndarray, specialists: list[str], iou: float, priority: tuple[str, ...]) -> list[list[int]]:
    """Greedy clusters of one image's regions. Regions are taken in specialist-priority order; each
    joins the cluster whose first region it overlaps most (IoU >= ``iou``) and that has no region
    of its specialist yet, or starts a new one. One IoU matrix per image (torchvision)."""
    n = len(boxes)
    order = sorted(range(n), key=lambda i: (_rank(specialists[i], priority), i))
    overlaps = box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes)).numpy() if n else np.zeros((0, 0))
    seeds: list[int] = []
    groups: list[list[int]] = []
    taken: list[set[str]] = []
    for i in order:
        best = None
        if seeds:
            candidates = overlaps[i, seeds]
            for g in np.flatnonzero(candidates >= iou)[np.argsort(-candidates[candidates >= iou], kind="stable")]:
                if specialists[i] not in taken[g]:
                    best = int(g)
                    break
        if best is None:
            seeds.append(i)
            groups.append([i])
            taken.append({specialists[i]})
        else:
            groups[best].append(i)
            taken[best].add(specialists[i])
    return groups


def unconfirmed(rows: pa.Table, before: pa.Table) -> Decision:
    """Drop each re-read (``REREAD``) of a region that ``before`` (the rows before filtering) gave
    with a text and ``rows`` no longer hold: a reader shown a line whose text the round's filters
    refused (RapidOCR's "囍" on an icon, not English) would otherwise keep its own guess ("ZOO")
    there. A region given without text (a gold line as a prompt) is the reader's to read."""
    refused = {i for i, label in zip(before.column("region_id").to_pylist(), before.column("label").to_pylist()) if label}
    ids = rows.column("region_id").to_pylist()
    refused -= set(ids)
    return Decision("unconfirmed", [
        f"unconfirmed: reads again {i[:-len(REREAD)]}, whose text the round did not keep"
        if i.endswith(REREAD) and i[:-len(REREAD)] in refused else None for i in ids])


def fuse(rows: pa.Table, config: FusionConfig = FusionConfig()) -> tuple[pa.Table, Decision]:
    """(fused rows, decision on ``rows``): members of a fused region are dropped as ``merged``
    (kept whole in ``rejected``); regions without enough agreement as ``no_agreement``."""
    reasons: list[str | None] = [None] * rows.num_rows
    fused: list[dict] = []
    eligible = np.flatnonzero(pc.is_in(rows.column("kind"), pa.array(config.kinds)).to_numpy(zero_copy_only=False))
    if len(eligible) == 0:
        return schema_for("regions").empty_table(), Decision("fusion", reasons)
    sub = rows.take(eligible)
    boxes, scores = boxes_of(sub), scores_of(sub)
    records = sub.select(["image_id", "region_id", "kind", "label", "quad", "mask", "specialist", "specialist_version", "round"]).to_pylist()
    by_image: dict[tuple[str, str], list[int]] = {}
    for k, r in enumerate(records):
        by_image.setdefault((r["image_id"], r["kind"]), []).append(k)
    for (image_id, kind), members in by_image.items():
        specialists = [records[k]["specialist"] for k in members]
        for group in clusters(boxes[members], specialists, config.iou, config.priority):
            ks = [members[g] for g in group]
            agreement = len({records[k]["specialist"] for k in ks})
            if agreement < config.min_agreement:
                for k in ks:
                    reasons[eligible[k]] = f"no_agreement: {agreement} specialist(s) < {config.min_agreement}"
                continue
            if len(ks) == 1:
                continue
            fused.append(_fused_row(records, boxes, scores, ks, config))
            for k in ks:
                reasons[eligible[k]] = f"merged: into {fused[-1]['region_id']}"
    return pa.Table.from_pylist(fused, schema=schema_for("regions")), Decision("fusion", reasons)


def _fused_row(records: list[dict], boxes: np.ndarray, scores: np.ndarray, ks: list[int], config: FusionConfig) -> dict:
    ranked = sorted(ks, key=lambda k: _rank(records[k]["specialist"], config.priority))
    votes = Counter(records[k]["label"] for k in ks)
    top = max(votes.values())
    label = next(records[k]["label"] for k in ranked if votes[records[k]["label"]] == top)
    mask = next((records[k]["mask"] for k in ranked if records[k]["mask"] is not None), None)
    quad = next((records[k]["quad"] for k in ranked if records[k]["quad"] is not None), None)
    members = [{"specialist": records[k]["specialist"], "specialist_version": records[k]["specialist_version"],
                "region_id": records[k]["region_id"], "label": records[k]["label"],
                "score": None if np.isnan(scores[k]) else float(scores[k])} for k in ranked]
    first = records[ranked[0]]
    return {
        "image_id": first["image_id"],
        "region_id": "fused-" + fingerprint(sorted(records[k]["region_id"] for k in ks)),
        "kind": first["kind"],
        "box": boxes[ks].mean(axis=0).astype(np.float32).tolist(),
        "quad": quad, "mask": mask, "label": label, "members": members,
        "round": first["round"], "specialist": SPECIALIST, "specialist_version": config.version,
        "score": float(len({records[k]["specialist"] for k in ks})), "score_source": "agreement_count",
    }

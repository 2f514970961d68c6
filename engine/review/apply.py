"""Human rows win: on an image a person reviewed, their answer replaces the machines' rows of
what they reviewed, in the review round and in every round after it.

The ``reviews`` table is the record (who, when, the answer); from it each round gets:
- a ``human`` shard of ``texts`` and ``regions`` (``specialist = human``, ``score_source =
  human``, score 1, the reviewer as ``specialist_version``; a box takes the mask of the machine
  box it confirms, IoU >= ``MASK_IOU`` and same kind, carried from round to round);
- the machines' object and OCR regions of reviewed images, and their descriptions of each
  granularity the person wrote, moved to ``rejected`` (filter ``review``), with the triplets
  that pointed at them. Region captions are not reviewed and stay.

Applying is idempotent (a shard is rewritten only when it loses rows; the rows it loses are
added to its ``review-*`` rejected shard first), so an apply cut short is finished by running
it again, and a later round that runs it changes only what that round's machines wrote anew.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchvision.ops import box_iou

from engine.dataset.store import RoundWriter, Store
from engine.review.label_studio import Answer
from filters.decision import ID_COLUMNS, Decision, apply, rejected_rows
from schemas import schema_for
from schemas.hashing import fingerprint

log = logging.getLogger(__name__)
HUMAN = "human"
SHARD = "human"
FILTER = "review"
MASK_IOU = 0.9
TABLES = ("texts", "regions", "triplets")


@dataclass(frozen=True)
class Review:
    """The latest review of one image (a ``reviews`` row)."""

    image_id: str
    task_id: str
    annotation_id: str
    reviewer: str
    reviewed_at: object
    answer: Answer

    def prefix(self) -> str:
        return review_prefix(self.image_id, self.annotation_id, self.reviewed_at)


def review_prefix(image_id: str, annotation_id: str, reviewed_at: object) -> str:
    """What the ids of the rows one review made start with (a newer review of the image has another)."""
    return f"{image_id}-human{fingerprint([image_id, annotation_id, str(reviewed_at)])}-"


def _prefixes(table: str, rows: pa.Table) -> list[str]:
    """Each human row's review prefix (all prefixes of an image have the same length)."""
    extra = len(review_prefix("", "", None))
    return [i[: len(image) + extra] for i, image in zip(rows.column(ID_COLUMNS[table]).to_pylist(),
                                                         rows.column("image_id").to_pylist())]


def latest_reviews(store: Store, up_to_round: int) -> dict[str, Review]:
    """Per image, the review imported latest-reviewed into rounds <= ``up_to_round``."""
    rows = [r for r in store.read("reviews").to_pylist() if r["round"] <= up_to_round]
    latest: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: (r["reviewed_at"], r["imported_at"])):
        latest[r["image_id"]] = r
    return {i: Review(i, r["task_id"], r["annotation_id"], r["reviewer"], r["reviewed_at"], Answer.from_json(r["answer"]))
            for i, r in latest.items()}


def _provenance(round_id: int, review: Review) -> dict:
    return {"round": round_id, "specialist": HUMAN, "specialist_version": review.reviewer, "score": 1.0,
            "score_source": "human"}


def human_rows(reviews: Mapping[str, Review], round_id: int) -> dict[str, pa.Table]:
    """``texts`` and ``regions`` rows of ``reviews`` for round ``round_id`` (no masks yet)."""
    regions, texts = [], []
    for image, review in sorted(reviews.items()):
        for b in review.answer.boxes:
            regions.append({"image_id": image, "region_id": review.prefix() + b.result_id, "kind": b.kind,
                            "box": list(b.box), "quad": [b.box[0], b.box[1], b.box[2], b.box[1], b.box[2], b.box[3],
                                                         b.box[0], b.box[3]] if b.kind == "ocr" else None,
                            "mask": None, "mask_score": None, "mask_specialist": None, "label": b.label,
                            "members": None, **_provenance(round_id, review)})
        for granularity, text in sorted(review.answer.texts.items()):
            texts.append({"image_id": image, "text_id": review.prefix() + granularity, "granularity": granularity,
                          "text": text, **_provenance(round_id, review)})
    return {"regions": pa.Table.from_pylist(regions, schema=schema_for("regions")),
            "texts": pa.Table.from_pylist(texts, schema=schema_for("texts"))}


def borrow_masks(human: pa.Table, machine: pa.Table) -> pa.Table:
    """Human boxes without a mask take the mask of the machine box of their image and kind they
    overlap most, when IoU >= MASK_IOU (a person who kept a box kept its mask)."""
    masked = machine.filter(pc.invert(pc.is_null(machine.column("mask")))) if machine.num_rows else machine
    if not human.num_rows or not masked.num_rows:
        return human
    found: dict[tuple[str, str], list[dict]] = {}
    for m in masked.select(["image_id", "kind", "box", "mask", "mask_score", "mask_specialist", "specialist",
                            "specialist_version"]).to_pylist():
        found.setdefault((m["image_id"], m["kind"]), []).append(m)
    rows = human.to_pylist()
    for row in rows:
        candidates = found.get((row["image_id"], row["kind"]), [])
        if row["mask"] is not None or not candidates:
            continue
        iou = box_iou(torch.tensor([row["box"]]), torch.tensor([c["box"] for c in candidates])).numpy()[0]
        best = int(iou.argmax())
        if iou[best] >= MASK_IOU:
            m = candidates[best]
            row.update(mask=m["mask"], mask_score=m["mask_score"],
                       mask_specialist=m["mask_specialist"] or f"{m['specialist']}@{m['specialist_version']}")
    return pa.Table.from_pylist(rows, schema=schema_for("regions"))


def override(table: str, rows: pa.Table, reviews: Mapping[str, Review], gone: set[str]) -> Decision:
    """What a person's review removes from machine ``rows`` of ``table``; ``gone`` collects the
    ids removed (texts and regions first, so that triplets pointing at them follow)."""
    reasons: list[str | None] = [None] * rows.num_rows
    id_column = ID_COLUMNS[table]
    names = ["image_id", id_column, "score_source"] + {"texts": ["granularity"], "regions": ["kind"],
                                                       "triplets": ["text_id", "region_id"]}[table]
    reviewed = pc.and_(pc.is_in(rows.column("image_id"), pa.array(list(reviews), pa.string())),
                       pc.not_equal(rows.column("score_source"), "human"))
    at = np.flatnonzero(reviewed.to_numpy(zero_copy_only=False))
    for k, r in zip(at, rows.take(pa.array(at, pa.int64())).select(names).to_pylist()):
        review = reviews[r["image_id"]]
        why = f"human_review: replaced by {review.reviewer}'s review (task {review.task_id})"
        if table == "regions" and r["kind"] in ("object", "ocr"):
            reasons[k] = why
        elif table == "texts" and r["granularity"] in review.answer.texts:
            reasons[k] = why
        elif table == "triplets" and (r["text_id"] in gone or r["region_id"] in gone):
            reasons[k] = f"human_review: its {'text' if r['text_id'] in gone else 'region'} was replaced by " \
                         f"{review.reviewer}'s review (task {review.task_id})"
        if reasons[k] is not None:
            gone.add(r[id_column])
    return Decision(FILTER, reasons)


@dataclass
class Applied:
    """What applying the reviews did to one round."""

    round: int
    images: int = 0
    human: Counter = field(default_factory=Counter)
    """Human rows the round holds, per table."""
    replaced: Counter = field(default_factory=Counter)
    """Machine rows moved to ``rejected`` by this apply, per table."""


def _shard_label(path) -> str:
    return path.stem.removeprefix("shard-")


def apply_reviews(store: Store, writer: RoundWriter) -> Applied:
    """Make the writer's round agree with every review imported up to it (see the module)."""
    round_id = writer.round
    reviews = latest_reviews(store, round_id)
    result = Applied(round_id, len(reviews))
    if not reviews:
        return result
    # human rows: kept as they are where this round (or the one before) already made them for the same review
    earlier = {t: [store.read_file(p, t) for r in (round_id, round_id - 1) if r >= 0
                   for p in [store.shard_path(t, r, SHARD)] if p.exists()] for t in ("texts", "regions")}
    keys = {review.prefix() for review in reviews.values()}
    found = {t: [_prefixes(t, rows) for rows in earlier[t]] for t in earlier}
    present = {p for prefixes in found.values() for each in prefixes for p in each}
    machine = store.read("regions", round_id)
    made = human_rows({i: r for i, r in reviews.items() if r.prefix() not in present}, round_id)
    for table in ("texts", "regions"):
        current = [with_round(rows.filter(pa.array([p in keys for p in prefixes], pa.bool_())), round_id)
                   for rows, prefixes in zip(earlier[table], found[table])]
        rows = _unique(table, pa.concat_tables([*current, made[table]]))
        if table == "regions":
            rows = borrow_masks(rows, machine.filter(pc.not_equal(machine.column("score_source"), "human")))
        own = store.shard_path(table, round_id, SHARD)
        if own.exists():  # a newer review of an image supersedes the human rows of the older one
            before = store.read_file(own, table)
            stale = before.filter(pc.invert(pc.is_in(before.column(ID_COLUMNS[table]), rows.column(ID_COLUMNS[table]))))
            if stale.num_rows:
                _reject(store, writer, table, SHARD, stale, "human_review: superseded by a newer review of the image")
        writer.write(table, SHARD, rows)
        result.human[table] = rows.num_rows
    done = store.read("rejected", round_id, columns=["filter", "row_id"])  # a cut-short apply's drops count too
    gone = set(done.filter(pc.equal(done.column("filter"), FILTER)).column("row_id").to_pylist())
    for table in TABLES:
        for path in store.files(table, round_id):
            label = _shard_label(path)
            if label == SHARD:
                continue
            rows = store.read_file(path, table)
            decision = override(table, rows, reviews, gone)
            if decision.keep.all():
                continue
            kept, rejected = apply(table, rows, decision)
            _reject_rows(store, writer, table, label, rejected)
            writer.write(table, label, kept)
            result.replaced[table] += rows.num_rows - kept.num_rows
    log.info("round %d: %d reviewed image(s) hold %s human rows; replaced %s machine rows", round_id, len(reviews),
             dict(result.human), dict(result.replaced))
    return result


def with_round(table: pa.Table, round_id: int) -> pa.Table:
    """``table`` with every row moved to round ``round_id``."""
    index = table.schema.get_field_index("round")
    return table.set_column(index, table.schema.field(index), pa.array([round_id] * table.num_rows, pa.int32()))


def _unique(table: str, rows: pa.Table) -> pa.Table:
    ids = rows.column(ID_COLUMNS[table]).to_pylist()
    first = {i: k for k, i in reversed(list(enumerate(ids)))}
    return rows.take(pa.array(sorted(first.values()), pa.int64()))


def _reject(store: Store, writer: RoundWriter, table: str, label: str, rows: pa.Table, reason: str) -> None:
    _reject_rows(store, writer, table, label, rejected_rows(table, rows, FILTER, [reason] * rows.num_rows))


def _reject_rows(store: Store, writer: RoundWriter, table: str, label: str, rejected: pa.Table) -> None:
    """Add ``rejected`` to the round's ``review-<table>-<label>`` shard (never replacing what it held)."""
    name = f"review-{table}-{label}"[:64]
    path = store.shard_path("rejected", writer.round, name)
    if path.exists():
        before = store.read_file(path, "rejected")
        rejected = pa.concat_tables([before, rejected.filter(pc.invert(pc.is_in(rejected.column("row_id"),
                                                                                  before.column("row_id"))))])
    writer.write("rejected", name, rejected)


def apply_to_round(store: Store, round_id: int) -> Applied:
    """Apply the reviews to a round the machines just wrote (a no-op when nobody reviewed)."""
    if not store.files("reviews"):
        return Applied(round_id)
    with store.writer(round_id) as writer:
        return apply_reviews(store, writer)

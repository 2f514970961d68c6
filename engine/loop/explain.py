"""``fld explain ID``: one annotation's lineage, read from the dataset alone.

Where a row came from: its round and the round's kind, the specialist (name and version) that
proposed it and the model behind it (the round's config names its weights; the model's manifest
says which round trained it, or which zoo card it was adopted from, and what it scored on gold),
the members a fusion merged into it and the rows the filters merged into it, the floor its
specialist's boxes had to clear, the gates that admitted its specialist's tasks that round, and
the mask's specialist when a segmenter drew it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.compute as pc

from engine.dataset.store import Store, StoreError
from engine.loop.bootstrap import models_dir
from engine.loop.training import MANIFEST

ID_COLUMNS = {"regions": "region_id", "texts": "text_id", "triplets": "triplet_id"}
WEIGHT_OPTIONS = ("weights", "checkpoint")


class UnknownRow(StoreError):
    """No annotation with that id (in that round)."""


@dataclass(frozen=True)
class Lineage:
    table: str
    round: int
    round_kind: str | None
    row: dict
    members: list[dict] = field(default_factory=list)
    merged: list[dict] = field(default_factory=list)
    """Rows a filter merged into this one (``rejected`` rows whose reason names it)."""
    models: list[dict] = field(default_factory=list)
    """Per specialist behind the row: its round options and, when found, its model's manifest facts."""
    gates: list[dict] = field(default_factory=list)
    floors: dict = field(default_factory=dict)
    review: dict | None = None
    """For a person's row: who reviewed the image, when, in which task, from which export."""

    def to_dict(self) -> dict:
        return asdict(self)


def find_row(store: Store, row_id: str, round_id: int | None = None) -> tuple[str, dict]:
    """(table, row) of ``row_id``: the latest round holding it, or ``round_id``'s."""
    for table, column in ID_COLUMNS.items():
        ids = store.read(table, round_id, columns=[column, "round"]) if round_id is not None else \
            store.read(table, columns=[column, "round"])  # two columns first: a big dataset is read whole only once
        hits = ids.filter(pc.equal(ids.column(column), row_id)) if ids.num_rows else ids
        if hits.num_rows:
            latest = max(hits.column("round").to_pylist())
            rows = store.read(table, latest)
            return table, rows.filter(pc.equal(rows.column(column), row_id)).slice(0, 1).to_pylist()[0]
    where = f"round {round_id}" if round_id is not None else "any round"
    if dropped := _dropped(store, row_id, round_id):
        raise UnknownRow(f"no kept annotation with id {row_id!r} in {store.root} ({where}): the filters dropped it in "
                         f"round {dropped['round']} ({dropped['filter']}: {dropped['reason']}); its whole row: "
                         f"fld query \"SELECT row FROM rejected WHERE row_id = '{row_id.replace(chr(39), chr(39) * 2)}'\"")
    raise UnknownRow(f"no annotation with id {row_id!r} in {store.root} ({where}; searched texts, regions, "
                     "triplets); `fld query` lists ids, e.g. SELECT region_id FROM regions LIMIT 5")


def _dropped(store: Store, row_id: str, round_id: int | None) -> dict | None:
    """The latest ``rejected`` row of ``row_id`` (in ``round_id``), or None."""
    rows = store.read("rejected", round_id, columns=["row_id", "round", "filter", "reason"])
    hits = rows.filter(pc.equal(rows.column("row_id"), row_id)).to_pylist() if rows.num_rows else []
    return max(hits, key=lambda r: r["round"]) if hits else None


def _history(folder: Path) -> list[dict]:
    """The model's line back to round 0 (``<models>/round-<k>/<name>``, as the loop writes them):
    each round that trained it, and at round 0 the zoo card it was adopted from, if any."""
    name, models = folder.name, folder.parent.parent
    try:
        upto = int(folder.parent.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return []
    out = []
    for k in range(upto, -1, -1):
        path = models_dir(models, k) / name / MANIFEST
        if path.is_file():
            manifest = json.loads(path.read_text())
            out.append({"round": k, "folder": str(path.parent), "zoo": manifest.get("zoo"),
                        "train_seconds": manifest.get("seconds")})
    return out


def _manifest_of(options: dict) -> dict | None:
    """The manifest beside a served model's weights (a weights file or a checkpoint folder)."""
    for key in WEIGHT_OPTIONS:
        if options.get(key):
            path = Path(options[key])
            for folder in (path.parent, path.parent.parent):
                if (folder / MANIFEST).is_file():
                    manifest = json.loads((folder / MANIFEST).read_text())
                    return {"folder": str(folder), "gold": manifest.get("gold", {}), "history": _history(folder)}
    return None


def explain(store: Store, row_id: str, round_id: int | None = None) -> Lineage:
    table, row = find_row(store, row_id, round_id)
    r = row["round"]
    record = next((x for x in store.read("rounds").to_pylist() if x["round"] == r), None)
    config = json.loads(record["config"]) if record else {}
    names = {row["specialist"]} | {m["specialist"] for m in row.get("members") or []}
    if row.get("mask_specialist"):
        names.add(row["mask_specialist"].split("@", 1)[0])
    models = []
    for spec in config.get("specialists", []):
        if spec["name"] in names:
            models.append({"specialist": spec["name"], "key": spec.get("key"), "options": spec.get("options", {}),
                           "model": _manifest_of(spec.get("options", {}))})
    rejected = store.read("rejected", r)
    merged = [x for x in rejected.to_pylist() if x["reason"].endswith(f"into {row_id}")] if rejected.num_rows else []
    metrics = store.read("metrics", r)
    gates = [m for m in metrics.to_pylist() if m["family"] == "gates"
             and m["metric"].split(":", 1)[0] in names] if metrics.num_rows else []
    floors = config.get("filters", {}).get("regions", {}).get("min_score_by_specialist", {})
    return Lineage(table, r, record["kind"] if record else None, row, list(row.get("members") or []),
                   merged, models, [{"gate": g["metric"], "value": g["value"]} for g in gates],
                   {k: v for k, v in floors.items() if k.split("/")[0] in names}, _review(store, row_id, row))


def _review(store: Store, row_id: str, row: dict) -> dict | None:
    """The reviews-table record a human row was made from (its id starts with the review's prefix)."""
    if row.get("score_source") != "human":
        return None
    from engine.review.apply import review_prefix

    for x in store.read("reviews").to_pylist():
        if x["image_id"] == row["image_id"] and row_id.startswith(review_prefix(x["image_id"], x["annotation_id"],
                                                                                  x["reviewed_at"])):
            return {k: (str(v) if k.endswith("_at") else v) for k, v in x.items() if k != "answer"}
    return None

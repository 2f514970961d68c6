"""Label Studio's formats, both ways.

Out: the labeling config (``label_config.xml``: a RectangleLabels control ``label`` with the
dataset's categories and ``ocr-text``, a per-region TextArea ``transcription`` for the text of an
``ocr-text`` box, one TextArea per description granularity) and import tasks whose
``predictions`` are the round's rows (pre-annotations a person corrects).

In: Label Studio's JSON export of the reviewed tasks, read into typed answers. Coordinates are
Label Studio's percentages of the image (x, y, width, height of the top-left corner), turned
into pixel boxes with the dataset's image size. A bad export is refused whole, every problem
named by task and region, before anything is written.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from schemas.tables import GRANULARITIES

IMAGE = "image"
OBJECTS = "label"
TRANSCRIPTION = "transcription"
OCR_LABEL = "ocr-text"
"""The RectangleLabels value of a box of text (its words go in the per-region ``transcription``)."""
EDGE = 0.5
"""Percent a box may stick out of its image (Label Studio's rounding) before it is an error."""
SHOWN = 12


class ExportError(ValueError):
    """A Label Studio export that cannot be imported; names the file, task and region."""


@dataclass(frozen=True)
class HumanBox:
    result_id: str
    kind: str
    """``object`` or ``ocr``."""
    box: tuple[float, float, float, float]
    label: str
    """The category of an object, the text of an OCR box."""


@dataclass(frozen=True)
class Answer:
    """What a person said about one image: every object and text box, and the descriptions they
    wrote or kept (a granularity left empty is not reviewed)."""

    boxes: tuple[HumanBox, ...] = ()
    texts: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"boxes": [asdict(b) for b in self.boxes], "texts": dict(self.texts)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Answer:
        body = json.loads(text)
        return cls(tuple(HumanBox(b["result_id"], b["kind"], tuple(b["box"]), b["label"]) for b in body["boxes"]),
                   dict(body["texts"]))


@dataclass(frozen=True)
class ReviewedTask:
    """One task of an export: the latest submitted annotation of one image."""

    task_id: str
    image_id: str
    dataset: str
    queue_round: int
    annotation_id: str
    reviewer: str
    reviewed_at: dt.datetime
    answer: Answer
    superseded: int = 0
    """Other submitted annotations of the same image in the export (the latest one counts)."""


# -- out ------------------------------------------------------------------------------------------
def label_config(labels: Sequence[str]) -> str:
    """The labeling interface for the queue's tasks."""
    if OCR_LABEL in labels:
        raise ValueError(f"a category may not be called {OCR_LABEL!r}: Label Studio's text boxes use that name")
    choices = "\n".join(f"    <Label value={quoteattr(label)}/>" for label in [*sorted(labels), OCR_LABEL])
    descriptions = "\n".join(f'  <Header value="{g.replace("_", " ")} description"/>\n'
                             f'  <TextArea name="{g}" toName="{IMAGE}" editable="true" maxSubmissions="1" rows="3"/>'
                             for g in GRANULARITIES)
    return (f'<View>\n  <Image name="{IMAGE}" value="$image" zoom="true"/>\n'
            f'  <RectangleLabels name="{OBJECTS}" toName="{IMAGE}">\n{choices}\n  </RectangleLabels>\n'
            f'  <TextArea name="{TRANSCRIPTION}" toName="{IMAGE}" perRegion="true" editable="true" '
            f'maxSubmissions="1" rows="1" placeholder="the text of the selected {OCR_LABEL} box"/>\n'
            f"{descriptions}\n</View>\n")


def image_url(uri: str, local_files_root: Path | None) -> str:
    """What Label Studio loads: ``/data/local-files/?d=...`` under a local-files root (Label
    Studio started with LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to it), else the uri itself."""
    if local_files_root is None:
        return uri
    path = Path(uri.removeprefix("file://")).absolute()
    try:
        relative = path.relative_to(local_files_root.absolute())
    except ValueError:
        raise ValueError(f"image {uri} is not under the local-files root {local_files_root}") from None
    return "/data/local-files/?d=" + quote(relative.as_posix())


def _percent(box: Sequence[float], width: int, height: int) -> dict:
    x1, y1, x2, y2 = (float(v) for v in box)
    return {"x": 100 * x1 / width, "y": 100 * y1 / height, "width": 100 * (x2 - x1) / width,
            "height": 100 * (y2 - y1) / height, "rotation": 0}


def results(regions: Sequence[Mapping], texts: Sequence[Mapping], size: tuple[int, int]) -> list[dict]:
    """Label Studio results for an image's rows: a box per object and OCR region (with its
    transcription), a text per description."""
    width, height = size
    result = []
    for n, r in enumerate(regions):
        ocr = r["kind"] == "ocr"
        rid = f"r{n}"
        geometry = _percent(r["box"], width, height)
        common = {"id": rid, "to_name": IMAGE, "original_width": width, "original_height": height, "image_rotation": 0}
        result.append({**common, "from_name": OBJECTS, "type": "rectanglelabels",
                       "value": {**geometry, "rectanglelabels": [OCR_LABEL if ocr else r["label"]]},
                       **({"score": float(r["score"])} if r.get("score") is not None else {})})
        if ocr:
            result.append({**common, "from_name": TRANSCRIPTION, "type": "textarea",
                           "value": {**geometry, "text": [r["label"] or ""]}})
    for t in texts:
        result.append({"id": t["granularity"], "from_name": t["granularity"], "to_name": IMAGE, "type": "textarea",
                       "value": {"text": [t["text"]]}})
    return result


def task(image_id: str, url: str, size: tuple[int, int], dataset: str, round_id: int, rank: int, why: str,
         regions: Sequence[Mapping], texts: Sequence[Mapping]) -> dict:
    """One import task: the image, who ranked it and why, and the round's rows as a prediction."""
    return {"data": {IMAGE: url, "image_id": image_id, "fld_dataset": dataset, "fld_round": round_id,
                     "fld_rank": rank, "fld_why": why},
            "predictions": [{"model_version": f"fld round {round_id}", "result": results(regions, texts, size)}]}


# -- in -------------------------------------------------------------------------------------------
def _time(value) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _reviewer(annotation: Mapping) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, Mapping):
        who = who.get("email") or who.get("username") or who.get("id")
    if who is None or str(who).strip() == "":
        who = annotation.get("created_username") or "unknown"
    return str(who) if not isinstance(who, int) else f"user-{who}"


def load_export(path: str | Path) -> list:
    """The export's tasks; a missing, empty, cut or non-list file is refused by name."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such export file")
    raw = path.read_bytes()
    if not raw.strip():
        raise ExportError(f"{path} is empty: export the project again from Label Studio (Export -> JSON)")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExportError(f"{path} is not complete JSON ({err}): a half-written or cut export? "
                          "Export it again from Label Studio (Export -> JSON)") from None
    if not isinstance(body, list):
        raise ExportError(f"{path} holds a JSON {type(body).__name__}, not Label Studio's list of tasks "
                          "(Export -> JSON)")
    if not body:
        raise ExportError(f"{path} holds no tasks: nothing to import")
    return body


class _Problems:
    def __init__(self, path: Path):
        self.path, self.items = path, []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            shown = "\n  ".join(self.items[:SHOWN])
            more = f"\n  ... and {len(self.items) - SHOWN} more" if len(self.items) > SHOWN else ""
            raise ExportError(f"{self.path}: {len(self.items)} problem(s), nothing was imported:\n  {shown}{more}")


def read_export(path: str | Path, sizes: Mapping[str, tuple[int, int]], labels: Collection[str]) -> list[ReviewedTask]:
    """The reviewed tasks of a Label Studio JSON export (tasks nobody submitted are skipped).

    ``sizes``: width and height of every image the export may name; ``labels``: the known
    categories. Raises ``ExportError`` listing every problem."""
    path = Path(path)
    problems = _Problems(path)
    found: dict[str, ReviewedTask] = {}
    for n, item in enumerate(load_export(path)):
        where = f"task {item.get('id', f'#{n}') if isinstance(item, Mapping) else f'#{n}'}"
        if not isinstance(item, Mapping) or not isinstance(item.get("data"), Mapping):
            problems.add(where, "not a Label Studio task (no 'data' object)")
            continue
        if "annotations" not in item:
            problems.add(where, "has no 'annotations': export with Label Studio's JSON format, not JSON-MIN or CSV")
            continue
        data = item["data"]
        image_id = data.get("image_id")
        where += f" (image {image_id})"
        if not isinstance(image_id, str) or image_id not in sizes:
            problems.add(where, "names an image this dataset does not have" if isinstance(image_id, str)
                         else "has no data.image_id: it was not made by `fld review queue`")
            continue
        if not isinstance(data.get("fld_dataset"), str) or not isinstance(data.get("fld_round"), int):
            problems.add(where, "has no data.fld_dataset / data.fld_round: it was not made by `fld review queue`")
            continue
        submitted = [a for a in item["annotations"] or []
                     if isinstance(a, Mapping) and not a.get("was_cancelled") and not a.get("skipped")]
        if not submitted:
            continue
        latest = max(submitted, key=lambda a: (_time(a.get("updated_at")) or _time(a.get("created_at"))
                                               or dt.datetime.min.replace(tzinfo=dt.timezone.utc), str(a.get("id"))))
        when = _time(latest.get("updated_at")) or _time(latest.get("created_at"))
        if when is None:
            problems.add(where, f"annotation {latest.get('id')} has no valid created_at/updated_at time")
            continue
        answer = _answer(latest.get("result"), sizes[image_id], labels, where, problems)
        if answer is None:
            continue
        reviewed = ReviewedTask(str(item.get("id", n)), image_id, data["fld_dataset"], data["fld_round"],
                                str(latest.get("id", "")), _reviewer(latest), when, answer, len(submitted) - 1)
        earlier = found.get(image_id)
        if earlier is not None:  # the same image in two tasks (exported twice, or imported into LS twice)
            keep = max(earlier, reviewed, key=lambda t: t.reviewed_at)
            reviewed = replace(keep, superseded=earlier.superseded + reviewed.superseded + 1)
        found[image_id] = reviewed
    problems.raise_if_any()
    return list(found.values())


def _answer(result, size: tuple[int, int], labels: Collection[str], where: str, problems: _Problems) -> Answer | None:
    if not isinstance(result, list):
        problems.add(where, "its annotation has no 'result' list")
        return None
    before = len(problems.items)
    width, height = size
    rects: dict[str, Mapping] = {}
    words: dict[str, str] = {}
    texts: dict[str, str] = {}
    for r in result:
        if not isinstance(r, Mapping) or not isinstance(r.get("value"), Mapping):
            problems.add(where, f"result {r!r:.60} is not a Label Studio region")
            continue
        rid, kind, control, value = str(r.get("id")), r.get("type"), r.get("from_name"), r["value"]
        if control in GRANULARITIES and kind == "textarea":
            text = "\n".join(str(t) for t in value.get("text", [])).strip()
            if text:
                texts[control] = text
        elif control == TRANSCRIPTION and kind == "textarea":
            words[rid] = " ".join(str(t) for t in value.get("text", [])).strip()
        elif control == OBJECTS and kind == "rectanglelabels":
            if rid in rects and rects[rid] != value:
                problems.add(where, f"region {rid} appears twice with different boxes or labels; keep one in Label Studio")
            rects[rid] = value
        else:
            problems.add(where, f"result {rid} is a {kind} of control {control!r}; the queue's config has "
                                f"rectanglelabels '{OBJECTS}' and textareas '{TRANSCRIPTION}', {', '.join(GRANULARITIES)}")
    boxes = []
    for rid, value in rects.items():
        region = f"region {rid}"
        try:
            x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
        except (KeyError, TypeError, ValueError):
            problems.add(where, f"{region} has no numeric x, y, width, height")
            continue
        chosen = value.get("rectanglelabels")
        if not isinstance(chosen, list) or len(chosen) != 1 or not isinstance(chosen[0], str):
            problems.add(where, f"{region} must carry exactly one label, has {chosen!r}")
            continue
        label = chosen[0]
        if float(value.get("rotation") or 0.0) != 0.0:
            problems.add(where, f"{region} ({label}) is rotated; boxes must be axis-aligned")
            continue
        if not (w > 0 and h > 0) or x < -EDGE or y < -EDGE or x + w > 100 + EDGE or y + h > 100 + EDGE:
            problems.add(where, f"{region} ({label}) lies outside the image or has no area "
                                f"(x={x:.1f}% y={y:.1f}% width={w:.1f}% height={h:.1f}%)")
            continue
        box = (max(0.0, x) * width / 100, max(0.0, y) * height / 100,
               min(100.0, x + w) * width / 100, min(100.0, y + h) * height / 100)
        if label == OCR_LABEL:
            if not words.get(rid):
                problems.add(where, f"{region} is an {OCR_LABEL} box without a transcription")
                continue
            boxes.append(HumanBox(rid, "ocr", box, words[rid]))
        elif label not in labels:
            problems.add(where, f"{region} has label {label!r}, not a category of this dataset "
                                f"(known: {', '.join(sorted(labels)[:20])}; add it with --allow-label)")
        else:
            boxes.append(HumanBox(rid, "object", box, label))
    orphans = sorted(set(words) - set(rects))
    if orphans:
        problems.add(where, f"transcription(s) {', '.join(orphans)} belong to no box")
    if len(problems.items) > before:
        return None
    return Answer(tuple(sorted(boxes, key=lambda b: b.result_id)), texts)

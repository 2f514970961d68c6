"""Florence-2 training JSONL: one line per example, ``{"image", "image_id", "task", "prompt",
"answer"}``, the answer with location tokens (1000 bins, floor, never ``<loc_1000>``), built by
the same code that trains the engine's own Florence-2."""

from __future__ import annotations

import json
from pathlib import Path

from engine.exports.selection import Selection, prepare_output
from specialists.training.florence2_examples import build_examples


def export_florence2(selection: Selection, out: Path, overwrite: bool = False) -> dict[str, int]:
    examples = build_examples(selection.texts, selection.regions, selection.triplets, selection.sizes)
    out = prepare_output(out, overwrite, is_dir=False)
    uris = selection.uris
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w") as handle:
        for e in examples:
            handle.write(json.dumps({"image": uris[e.image_id], "image_id": e.image_id, "task": e.task,
                                     "prompt": e.prompt, "answer": e.target}) + "\n")
    tmp.replace(out)
    counts: dict[str, int] = {}
    for e in examples:
        counts[e.task] = counts.get(e.task, 0) + 1
    return {"examples": len(examples), **counts}

"""YOLO text labels: ultralytics' detection dataset layout (``images/`` links, ``labels/`` with
``class cx cy w h`` normalised, ``data.yaml``) of the object regions, as fld trains its own YOLO."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from engine.exports.selection import Selection, prepare_output
from specialists.training.yolo import write_yolo_dataset


def export_yolo(selection: Selection, out: Path, overwrite: bool = False, val_fraction: float = 0.1) -> dict[str, int]:
    objects = selection.regions.filter(pc.equal(selection.regions.column("kind"), "object"))
    names = sorted(set(objects.column("label").drop_null().to_pylist()))
    if not names:
        raise ValueError(f"round {selection.round} has no labelled object regions to export as YOLO labels")
    out = prepare_output(out, overwrite, is_dir=True)
    out.rmdir()  # write_yolo_dataset creates it
    write_yolo_dataset(objects, selection.uris, selection.sizes, names, out, val_fraction)
    return {"images": len(selection.uris), "objects": objects.num_rows, "classes": len(names)}

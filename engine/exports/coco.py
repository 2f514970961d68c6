"""COCO: ``instances.json`` (object, OCR and region-caption regions as annotations with RLE masks
where there is one, categories from the labels of object regions) and ``captions.json`` (the
descriptions, each with its granularity). pycocotools reads both back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.exports.selection import Selection, prepare_output
from schemas.geometry import box_array


def export_coco(selection: Selection, out: Path, overwrite: bool = False) -> dict[str, int]:
    out = prepare_output(out, overwrite, is_dir=True)
    ids = {image_id: k + 1 for k, image_id in enumerate(sorted(selection.uris))}
    sizes = selection.sizes
    images = [{"id": ids[i], "file_name": selection.uris[i], "width": sizes[i][0], "height": sizes[i][1],
               "fld_image_id": i} for i in sorted(ids)]
    regions = selection.regions
    rows = regions.select(["image_id", "region_id", "kind", "label", "mask", "score", "specialist"]).to_pylist()
    boxes = box_array(regions.column("box")) if regions.num_rows else np.zeros((0, 4))
    object_labels = sorted({r["label"] for r in rows if r["kind"] == "object" and r["label"]})
    categories = [{"id": k + 1, "name": name, "supercategory": "object"} for k, name in enumerate(object_labels)]
    extra = {"ocr": "text", "region_caption": "region"}
    for kind, name in extra.items():
        if any(r["kind"] == kind for r in rows):
            categories.append({"id": len(categories) + 1, "name": name, "supercategory": kind})
    category = {c["name"]: c["id"] for c in categories}
    annotations = []
    for k, (row, box) in enumerate(zip(rows, boxes.tolist())):
        x1, y1, x2, y2 = box
        name = row["label"] if row["kind"] == "object" else extra[row["kind"]]
        if name not in category:
            continue
        ann = {"id": k + 1, "image_id": ids[row["image_id"]], "category_id": category[name],
               "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
               "score": row["score"], "fld_region_id": row["region_id"], "fld_kind": row["kind"],
               "fld_specialist": row["specialist"]}
        if row["kind"] != "object":
            ann["caption" if row["kind"] == "region_caption" else "text"] = row["label"]
        if row["mask"] is not None:
            ann["segmentation"] = {"size": list(row["mask"]["size"]), "counts": row["mask"]["counts"]}
            ann["area"] = float(_rle_area(ann["segmentation"]))
        annotations.append(ann)
    info = {"description": f"fld-engine round {selection.round}", "version": "1"}
    (out / "instances.json").write_text(json.dumps({"info": info, "images": images, "annotations": annotations,
                                                    "categories": categories}))
    captions = [{"id": k + 1, "image_id": ids[r["image_id"]], "caption": r["text"], "granularity": r["granularity"],
                 "score": r["score"]} for k, r in enumerate(selection.texts.select(["image_id", "text", "granularity", "score"]).to_pylist())]
    (out / "captions.json").write_text(json.dumps({"info": info, "images": images, "annotations": captions}))
    return {"images": len(images), "annotations": len(annotations), "captions": len(captions)}


def _rle_area(rle: dict) -> int:
    import pycocotools.mask as mask_utils

    return int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))

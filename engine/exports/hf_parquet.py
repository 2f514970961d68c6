"""A Hugging Face ``datasets`` layout: ``data/train-00000-of-00001.parquet`` with one row per image
(its path, size, descriptions, regions and grounded phrases as nested columns) and a README whose
YAML header declares the config, so ``datasets.load_dataset(folder)`` reads it as it is."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.exports.selection import Selection, prepare_output
from schemas.geometry import box_array

REGION = pa.struct([("region_id", pa.string()), ("kind", pa.string()), ("label", pa.string()),
                    ("bbox", pa.list_(pa.float32(), 4)), ("score", pa.float32()),
                    ("mask_rle", pa.string()), ("specialist", pa.string())])
TEXT = pa.struct([("granularity", pa.string()), ("text", pa.string()), ("score", pa.float32())])
PHRASE = pa.struct([("text_id", pa.string()), ("phrase", pa.string()), ("span_start", pa.int32()),
                    ("span_end", pa.int32()), ("bbox", pa.list_(pa.float32(), 4)), ("score", pa.float32())])
SCHEMA = pa.schema([("image_id", pa.string()), ("image", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                    ("texts", pa.list_(TEXT)), ("regions", pa.list_(REGION)), ("phrases", pa.list_(PHRASE))])
README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
---
# fld-engine export (round {round})

One row per image: `image` (path), `texts` (descriptions by granularity), `regions` (boxes as
x1, y1, x2, y2 in pixels, COCO RLE masks as JSON), `phrases` (text-phrase-region triplets).
"""


def export_hf(selection: Selection, out: Path, overwrite: bool = False) -> dict[str, int]:
    import json

    out = prepare_output(out, overwrite, is_dir=True)
    texts, regions, phrases = defaultdict(list), defaultdict(list), defaultdict(list)
    for r in selection.texts.select(["image_id", "granularity", "text", "score"]).to_pylist():
        texts[r["image_id"]].append({k: r[k] for k in ("granularity", "text", "score")})
    boxes = box_array(selection.regions.column("box")) if selection.regions.num_rows else []
    for r, box in zip(selection.regions.select(["image_id", "region_id", "kind", "label", "score", "mask", "specialist"]).to_pylist(), boxes):
        regions[r["image_id"]].append({"region_id": r["region_id"], "kind": r["kind"], "label": r["label"],
                                       "bbox": [float(v) for v in box], "score": r["score"], "specialist": r["specialist"],
                                       "mask_rle": json.dumps(r["mask"]) if r["mask"] else None})
    tboxes = box_array(selection.triplets.column("box")) if selection.triplets.num_rows else []
    for r, box in zip(selection.triplets.select(["image_id", "text_id", "phrase", "span_start", "span_end", "score"]).to_pylist(), tboxes):
        phrases[r["image_id"]].append({**{k: r[k] for k in ("text_id", "phrase", "span_start", "span_end", "score")},
                                       "bbox": [float(v) for v in box]})
    rows = [{"image_id": i, "image": selection.uris[i], "width": w, "height": h, "texts": texts.get(i, []),
             "regions": regions.get(i, []), "phrases": phrases.get(i, [])}
            for i, (w, h) in sorted(selection.sizes.items())]
    (out / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out / "data" / "train-00000-of-00001.parquet")
    (out / "README.md").write_text(README.format(round=selection.round))
    return {"images": len(rows), "texts": sum(map(len, texts.values())), "regions": sum(map(len, regions.values())),
            "phrases": sum(map(len, phrases.values()))}

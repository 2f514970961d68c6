"""A drawn scene's ground truth as rows of the dataset's tables (round 0, specialist ``world``)."""

from __future__ import annotations

from engine.world.describe import Description, region_caption
from engine.world.scene import Scene
from schemas.masks import encode_rle

SPECIALIST = "world"


def _prov(version: str) -> dict:
    return {"round": 0, "specialist": SPECIALIST, "specialist_version": version, "score": None,
            "score_source": "ground_truth"}


def truth_rows(image_id: str, scene: Scene, descriptions: list[Description], version: str) -> dict[str, list[dict]]:
    """Rows for ``texts``, ``regions`` and ``triplets`` describing one scene exactly."""
    prov = _prov(version)
    regions, texts, triplets = [], [], []
    object_ids, masks = [], []
    for k, obj in enumerate(scene.objects):
        mask = encode_rle(obj.mask)
        box = list(obj.box)
        object_id = f"{image_id}-o{k}"
        object_ids.append(object_id)
        masks.append(mask)
        regions.append({"image_id": image_id, "region_id": object_id, "kind": "object", "box": box,
                        "quad": None, "mask": mask, "label": obj.category, "members": None, **prov})
        regions.append({"image_id": image_id, "region_id": f"{image_id}-c{k}", "kind": "region_caption",
                        "box": box, "quad": None, "mask": mask, "label": region_caption(obj),
                        "members": None, **prov})
        if obj.text:
            x1, y1, x2, y2 = obj.text_box
            regions.append({"image_id": image_id, "region_id": f"{image_id}-t{k}", "kind": "ocr",
                            "box": [x1, y1, x2, y2], "quad": [x1, y1, x2, y1, x2, y2, x1, y2],
                            "mask": None, "label": obj.text, "members": None, **prov})
    for d in descriptions:
        text_id = f"{image_id}-{d.granularity}"
        texts.append({"image_id": image_id, "text_id": text_id, "granularity": d.granularity,
                      "text": d.text, **prov})
        for p, phrase in enumerate(d.phrases):
            for k in phrase.objects:
                triplets.append({
                    "image_id": image_id, "triplet_id": f"{text_id}-p{p}-o{k}", "text_id": text_id,
                    "text": d.text, "phrase": phrase.text, "span_start": phrase.start,
                    "span_end": phrase.end, "box": list(scene.objects[k].box), "mask": masks[k],
                    "region_id": object_ids[k], "phrase_score": None, **prov,
                })
    return {"texts": texts, "regions": regions, "triplets": triplets}

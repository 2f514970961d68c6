"""Running specialists in this process over a list of images, in dependency order, without Ray:
for measuring a freshly trained model on the gold split before it is allowed into a round."""

from __future__ import annotations

import pyarrow as pa

from engine.sources import load_rgb
from engine.workers import apply_masks
from schemas import schema_for
from specialists.base import Batch, Specialist

TABLES = ("texts", "regions", "triplets")


def predict_local(specialists: list[Specialist], images: dict[str, str], batch_size: int = 16,
                  round_id: int = 0) -> dict[str, pa.Table]:
    """Every specialist over ``images`` (id -> uri), each seeing the earlier ones' outputs as prompts.

    ``specialists`` must already be in dependency order and loaded."""
    ids = sorted(images)
    out = {t: [schema_for(t).empty_table()] for t in TABLES}
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        pixels = [load_rgb(images[i]) for i in chunk]
        found = {t: [schema_for(t).empty_table()] for t in TABLES}
        for specialist in specialists:
            batch = Batch(chunk, pixels, regions=pa.concat_tables(found["regions"]),
                          texts=pa.concat_tables(found["texts"]), round=round_id)
            result = specialist.predict(batch)
            for table, rows in result.items():
                if table in found and rows.num_rows:
                    if table == "regions" and specialist.role == "segmenter":
                        found["regions"] = [apply_masks(pa.concat_tables(found["regions"]), rows)]
                    else:
                        found[table].append(rows.cast(schema_for(table)))
        for t in TABLES:
            out[t] += found[t]
    return {t: pa.concat_tables(v) for t, v in out.items()}


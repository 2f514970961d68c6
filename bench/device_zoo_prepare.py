"""Prepare what ``bench/device_zoo_florence2.sh`` needs to travel to a lent GPU machine (run here,
in the repository's root, after ``fld zoo build`` has made the zoo world under ``zoo-build/``):

    python bench/device_zoo_prepare.py

* ``.whl/``: cp312 wheels of this project's pins the GPU image lacks or has in another version
  (transformers, pycocotools, dill, defusedxml), fetched with pip from the package index;
* ``.device/site/pycocoevalcap``: its bleu, cider and rouge packages only (its wheel is 100 MB of
  Java jars that nothing here runs);
* ``.device/zoo-build/world``: the zoo world's tables and its seed split's images (what training
  reads; about 21 MB), with the null entries of fixed-size list columns (an object's ``quad``, a
  box's missing ``mask``) written as placeholders: the GPU image's pyarrow (25) cannot read a
  Parquet list with nulls back into a fixed-size list. Training reads neither column of those rows
  (``<OD>`` reads boxes, ``<OCR_WITH_REGION>`` reads the quads OCR rows have), and the training
  key (image ids, row counts, settings) is unchanged: the script prints it for both copies.

Both folders are git-ignored (``.git/info/exclude``).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WHEELS = ("transformers==5.24.0", "pycocotools==2.0.11", "dill==0.4.1", "defusedxml==0.7.1")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
log = logging.getLogger("bench.device_zoo_prepare")


def wheels(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder), *WHEELS],
                   check=True)


def evalcap(site: Path) -> None:
    import pycocoevalcap.cider.cider as cider

    source = Path(cider.__file__).resolve().parents[1]
    target = site / "pycocoevalcap"
    shutil.rmtree(target, ignore_errors=True)
    for part in ("bleu", "cider", "rouge"):
        shutil.copytree(source / part, target / part, ignore=shutil.ignore_patterns("__pycache__"))


def placeholder(field: pa.Field, value):
    if value is not None:
        return value
    if pa.types.is_fixed_size_list(field.type):
        return [float("nan")] * field.type.list_size
    if pa.types.is_struct(field.type):  # a mask: {size: [h, w], counts}
        return {"size": [0, 0], "counts": ""}
    raise ValueError(f"no placeholder for {field}")


def needs_placeholder(field: pa.Field) -> bool:
    return pa.types.is_fixed_size_list(field.type) or (
        pa.types.is_struct(field.type) and any(pa.types.is_fixed_size_list(f.type) for f in field.type))


def world(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy(source / "world.json", target / "world.json")
    for part in ("truth", "gold", "seed-gold"):
        shutil.copytree(source / part, target / part, ignore=shutil.ignore_patterns("_locks"))
    shutil.copytree(source / "images" / "seed", target / "images" / "seed")
    for path in target.rglob("*.parquet"):
        table = pq.read_table(path)
        for i, field in enumerate(table.schema):
            if needs_placeholder(field) and table.column(i).null_count:
                values = [placeholder(field, v) for v in table.column(i).to_pylist()]
                array = pa.array(values, field.type) if pa.types.is_struct(field.type) else \
                    pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(values, np.float32).ravel(), field.type.value_type),
                                                      field.type.list_size)
                table = table.set_column(i, field, array)
        pq.write_table(table, path)


def key(root: Path) -> str:
    from engine.dataset.store import Store
    from engine.evaluation.gold import GoldGuard
    from engine.loop.profiles import budget_for, profile
    from engine.loop.training import training_key
    from engine.loop.training_set import load_training_set
    from specialists.training.registry import trainer_for

    trainer = trainer_for("florence2")
    gold, seed_gold = Store(root / "gold"), Store(root / "seed-gold")
    data = load_training_set(Store(root / "truth"), 0, ("seed",), GoldGuard.from_stores(gold, seed_gold))
    return training_key(trainer, data, budget_for(profile("zoo").bootstrap, trainer), gold, None, "cuda", seed_gold)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    wheels(ROOT / ".whl")
    evalcap(ROOT / ".device" / "site")
    world(ROOT / "zoo-build" / "world", ROOT / ".device" / "zoo-build" / "world")
    here, there = key(ROOT / "zoo-build" / "world"), key(ROOT / ".device" / "zoo-build" / "world")
    log.info("training key here %s, in the copy %s%s", here, there, "" if here == there else "  DIFFERENT: do not use")
    if here != there:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

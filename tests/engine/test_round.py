"""Annotation rounds through the Ray pipeline: end to end, resume, faults that must lose nothing."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import threading
import time

import pytest

from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.store import RoundLockedError, Store, StoreError
from engine.round.annotate import Decoded, StageOutput, stage_order
from engine.round.config import RoundConfig, SpecialistSpec
from engine.round.run import run_round
from engine.round.runtime import Runtime
from engine.round.workers import SpecialistWorker
from filters.pipeline import FilterConfig
from filters.regions import RegionFilterConfig
from schemas import validate_table


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    import ray

    with Runtime(num_cpus=2):
        yield ray


@pytest.fixture
def dataset(small_world, tmp_path):
    store = Store(tmp_path / "ds", create=True)
    ingest(str(small_world.images("pool")), store, IngestConfig(split="pool"))
    ingest(str(small_world.images("gold")), store, IngestConfig(split="gold"))
    return store


def config(yolo_weights, tiny_sam, tiny_florence2=None, **kw) -> RoundConfig:
    """YOLO and SAM (tiny, random weights); with a Florence-2, captions and their grounding too."""
    specialists = [
        SpecialistSpec("yolo", {"weights": str(yolo_weights), "imgsz": 160, "conf": 0.0, "max_det": 5}, cpus=0.5),
        SpecialistSpec("sam", {"checkpoint": str(tiny_sam), "model_type": "tiny"}, cpus=0.5),
    ]
    if tiny_florence2 is not None:
        specialists += [
            SpecialistSpec("florence2", {"checkpoint": str(tiny_florence2), "tasks": ["<CAPTION>"], "max_new_tokens": 12},
                           cpus=0.5),
            SpecialistSpec("label-grounder", cpus=0.5),
        ]
    # random-weight detections are low and large: let them through so masks and grounding get work
    lenient = FilterConfig(regions=RegionFilterConfig(min_score=0.0, max_area_fraction=1.0))
    return RoundConfig(specialists=tuple(specialists), shard_size=4, filters=lenient, **kw)


def snapshot(store: Store, round_id: int) -> dict:
    out = {}
    for table, key in (("texts", "text_id"), ("regions", "region_id"), ("triplets", "triplet_id"), ("rejected", "row_id")):
        rows = store.read(table, round_id).to_pylist()
        out[table] = sorted((r[key], r.get("box") and [round(v, 3) for v in r["box"]], r.get("reason")) for r in rows)
    return out


def test_round_end_to_end(ray_session, dataset, yolo_weights, tiny_sam, tiny_florence2):
    summary = run_round(dataset, 1, config(yolo_weights, tiny_sam, tiny_florence2))
    images = dataset.read("images").num_rows
    assert summary.images == images and summary.failures == 0
    assert summary.shards == -(-images // 4) and summary.skipped == 0
    sizes = dataset.image_sizes()
    for table in ("texts", "regions", "triplets", "rejected", "failures"):
        assert validate_table(table, dataset.read(table, 1), sizes) == [], table
    texts = dataset.read("texts", 1)
    assert texts.num_rows == images  # one brief caption per image from Florence-2
    regions = dataset.read("regions", 1).to_pylist()
    assert regions and all(r["specialist"] == "yolo" for r in regions)
    assert all(r["mask_specialist"].startswith("sam@") and r["mask"] for r in regions)
    with dataset.writer(1) as writer:
        assert len(writer.done_shards()) == summary.shards
    assert 0 < len(dataset.files("regions", 1)) <= summary.shards and not dataset.files("failures", 1)  # no empty files
    rounds = dataset.read("rounds", 1).to_pylist()
    assert rounds[0]["status"] == "completed" and rounds[0]["finished_at"] >= rounds[0]["started_at"]
    kept_and_dropped = summary.kept["regions"] + sum(n for c, n in summary.filter_counts["geometry"].items() if c != "kept")
    assert kept_and_dropped <= summary.raw["regions"]

    # rerun: everything is complete, nothing is redone
    again = run_round(dataset, 1, config(yolo_weights, tiny_sam, tiny_florence2))
    assert again.skipped == summary.shards and again.images == 0


def test_resume_after_an_interrupted_round_gives_the_same_rows(ray_session, dataset, yolo_weights, tiny_sam, tmp_path):
    run_round(dataset, 1, config(yolo_weights, tiny_sam))
    whole = snapshot(dataset, 1)
    # interrupt: two shards lost their marker (one also its files), and a writer left a temp file
    markers = sorted((dataset.root / "_markers" / "round=1").glob("shard-*.json"))
    lost = [m.stem.removeprefix("shard-") for m in markers[:2]]
    for marker in markers[:2]:
        marker.unlink()
    for table in ("texts", "regions", "triplets", "rejected", "failures"):
        dataset.shard_path(table, 1, lost[0]).unlink(missing_ok=True)  # one lost its files too
    (dataset.round_dir("regions", 1) / f".shard-{lost[1]}.parquet.dead.tmp").write_bytes(b"partial")
    resumed = run_round(dataset, 1, config(yolo_weights, tiny_sam))
    assert resumed.skipped == len(markers) - 2 and resumed.images == 8
    assert snapshot(dataset, 1) == whole
    assert dataset.temp_files() == []


@pytest.mark.parametrize("placement, victim", [("pools", "sam-0"), ("fused", "fused-1")])
def test_a_killed_worker_costs_time_not_rows(ray_session, dataset, yolo_weights, tiny_sam, placement, victim):
    cfg = dataclasses.replace(config(yolo_weights, tiny_sam), placement=placement)
    run_round(dataset, 1, cfg)
    whole = snapshot(dataset, 1)
    result: dict = {}

    def run() -> None:
        try:
            result["summary"] = run_round(dataset, 2, cfg)
        except BaseException as err:  # surfaced by the assertion below
            result["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 120
    pid = None
    while pid is None and time.time() < deadline and thread.is_alive():
        try:
            pid = ray_session.get(ray_session.get_actor(f"fld-round2-{victim}").pid.remote(), timeout=10)
        except Exception:
            time.sleep(0.5)
    assert pid, f"the round's {victim} worker never started"
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert "error" not in result, result.get("error")
    assert result["summary"].failures == 0
    second = snapshot(dataset, 2)
    assert {t: [r[1:] for r in rows] for t, rows in second.items()} == {t: [r[1:] for r in rows] for t, rows in whole.items()}


def test_a_specialist_failing_on_one_image_fails_only_that_image(small_world, monkeypatch):
    from tests.batches import gold_batch

    batch = gold_batch(small_world, 4)
    worker = SpecialistWorker("grabcut", "grabcut", {})
    bad = batch.image_ids[2]
    real = worker.specialist.predict

    def predict(b):
        if bad in b.image_ids:
            raise RuntimeError("model blew up")
        return real(b)

    monkeypatch.setattr(worker.specialist, "predict", predict)
    decoded = Decoded(batch.image_ids, batch.images)
    out = worker.run(decoded, 1, "00000", StageOutput("boxes", {"regions": batch.regions}, [], 0.0))
    assert [(f.image_id, f.stage) for f in out.failures] == [(bad, "grabcut")]
    assert "model blew up" in out.failures[0].error
    assert set(out.tables["masks"].column("image_id").to_pylist()) == set(batch.image_ids) - {bad}


def test_an_image_gone_since_ingest_becomes_a_failure_row(ray_session, dataset, yolo_weights, tiny_sam):
    victim = dataset.read("images").to_pylist()[0]
    moved = victim["uri"] + ".moved"
    shutil.move(victim["uri"], moved)
    try:
        summary = run_round(dataset, 1, config(yolo_weights, tiny_sam))
    finally:
        shutil.move(moved, victim["uri"])
    failures = dataset.read("failures", 1).to_pylist()
    assert [(f["image_id"], f["stage"]) for f in failures] == [(victim["image_id"], "decode")]
    assert summary.images == dataset.read("images").num_rows - 1


def test_second_writer_of_a_round_is_refused(ray_session, dataset, yolo_weights, tiny_sam):
    with dataset.writer(1):
        with pytest.raises(RoundLockedError, match="round 1"):
            run_round(dataset, 1, config(yolo_weights, tiny_sam))


def test_round_needs_images_and_a_round_number(dataset, yolo_weights, tiny_sam, tmp_path):
    with pytest.raises(StoreError, match="start at 1"):
        run_round(dataset, 0, config(yolo_weights, tiny_sam))
    with pytest.raises(StoreError, match="run `fld ingest` first"):
        run_round(Store(tmp_path / "empty", create=True), 1, config(yolo_weights, tiny_sam))


@pytest.mark.parametrize(
    "needs, produces, expected",
    [
        ({"yolo": (), "sam": ("regions",)}, {"yolo": ("regions",), "sam": ("masks",)}, [["yolo"], ["sam"]]),
        ({"yolo": (), "f2": (), "ground": ("texts", "regions"), "sam": ("regions",)},
         {"yolo": ("regions",), "f2": ("texts",), "ground": ("triplets",), "sam": ("masks",)},
         [["f2", "yolo"], ["ground", "sam"]]),
        ({"f2": (), "describe": ("regions",), "sam": ("regions",)},  # the region describer's captions get masks too
         {"f2": ("regions",), "describe": ("regions",), "sam": ("masks",)}, [["f2"], ["describe"], ["sam"]]),
        # two checkpoints each describing or reading the regions found before them: neither waits on the other
        ({"yolo": (), "ocr": (), "f2": (), "describe": ("regions",), "describe-1": ("regions",), "sam": ("regions",),
          "ground": ("texts", "regions")},
         {"yolo": ("regions",), "ocr": ("regions",), "f2": ("texts",), "describe": ("regions",),
          "describe-1": ("regions",), "sam": ("masks",), "ground": ("triplets",)},
         [["f2", "ocr", "yolo"], ["describe", "describe-1"], ["ground", "sam"]]),
    ],
)
def test_stage_order(needs, produces, expected):
    assert stage_order(needs, produces) == expected


def test_stage_cycle_and_missing_tables_are_refused_naming_them():
    with pytest.raises(ValueError, match="specialists a, b need each other's output"):
        stage_order({"a": ("texts",), "b": ("regions",)}, {"a": ("regions",), "b": ("texts",)})
    with pytest.raises(ValueError, match="'sam' needs regions but no other specialist of the round makes it"):
        stage_order({"sam": ("regions",), "ocr": ()}, {"sam": ("masks",), "ocr": ("texts",)})


def test_configs_are_ordered_from_what_each_configured_specialist_makes():
    """Florence-2's tables follow its tasks: a region describer and SAM are no longer a cycle."""
    f2 = lambda key, tasks: SpecialistSpec("florence2", {"checkpoint": "x", "tasks": tasks}, key=key)  # noqa: E731
    cfg = RoundConfig(specialists=(f2("f2", ["<CAPTION>", "<OD>"]), f2("grounder", ["<CAPTION_TO_PHRASE_GROUNDING>"]),
                                   SpecialistSpec("sam"), SpecialistSpec("label-grounder")))
    assert cfg.stages() == [["f2"], ["grounder", "label-grounder", "sam"]]
    with pytest.raises(ValueError, match="'sam' needs regions but no other specialist"):
        RoundConfig(specialists=(SpecialistSpec("sam"), SpecialistSpec("rapidocr", key="x"), f2("f2", ["<CAPTION>"]))[::2])
    with pytest.raises(ValueError, match="'grounder' needs texts"):
        RoundConfig(specialists=(f2("grounder", ["<CAPTION_TO_PHRASE_GROUNDING>"]), SpecialistSpec("yolo", {"weights": "y.pt"})))


def test_unknown_specialists_and_tasks_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown specialist 'dino'; known: yolo, sam, grabcut, rapidocr, florence2"):
        SpecialistSpec("dino")
    with pytest.raises(ValueError, match="cannot be imported"):
        SpecialistSpec("no.such.module:factory")
    with pytest.raises(ValueError, match=r"unknown Florence-2 task\(s\) \['<DANCE>'\]; known: <CAPTION>"):
        RoundConfig(specialists=(SpecialistSpec("florence2", {"checkpoint": "x", "tasks": ["<DANCE>"]}),))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"specialists": ()}, "at least one specialist"),
    ({"splits": ("seed",)}, "splits must be among"),
    ({"shard_size": 0}, "shard_size"),
    ({"placement": "gpu"}, "placement must be one of auto, fused, pools, got 'gpu'"),
    ({"max_in_flight": -1}, "max_in_flight and fused_workers must be >= 0"),
    ({"fused_workers": -2}, "max_in_flight and fused_workers must be >= 0"),
])
def test_bad_round_config(kwargs, fragment):
    base = {"specialists": (SpecialistSpec("rapidocr"),)}
    with pytest.raises(ValueError, match=fragment):
        RoundConfig(**{**base, **kwargs})


def test_auto_placement_fuses_cpu_rounds_and_pools_a_gpu_specialist():
    cpu = RoundConfig(specialists=(SpecialistSpec("rapidocr"), SpecialistSpec("yolo", {"weights": "y.pt"})))
    assert cpu.resolved_placement() == "fused"
    gpu = RoundConfig(specialists=(SpecialistSpec("rapidocr"), SpecialistSpec("yolo", {"weights": "y.pt", "device": "cuda:0"})))
    assert gpu.resolved_placement() == "pools"
    assert dataclasses.replace(gpu, placement="fused").resolved_placement() == "fused"
    assert cpu.rows_fingerprint() == dataclasses.replace(cpu, placement="pools").rows_fingerprint()


@pytest.mark.parametrize("asks, nodes, expected", [
    ([1.0, 1.0, 1.0], [2.0], 2 / 3),  # one node of two: the cluster's total decides
    ([1.0, 1.0, 1.0], [1.0, 1.0], 0.5),  # two nodes of one: two actors must share a node
    ([1.0, 1.0], [8.0, 8.0], 8.0),  # room to spare (the caller caps the scale at 1)
])
def test_pool_reservations_are_scaled_to_fit_the_smallest_node(asks, nodes, expected):
    from engine.round.runtime import fits_on_nodes

    scale = fits_on_nodes(asks, nodes)
    assert scale == pytest.approx(expected)
    per_node = -(-len(asks) // len(nodes))  # spread evenly, each node holds its share of the actors
    assert per_node * max(asks) * min(1.0, scale) <= min(nodes) + 1e-9


def test_round_config_from_toml(tmp_path):
    path = tmp_path / "round.toml"
    path.write_text('shard_size = 8\nsplits = ["pool"]\n[[specialists]]\nname = "rapidocr"\ncpus = 0.5\n'
                    '[filters.regions]\nmin_score = 0.4\n')
    cfg = RoundConfig.from_file(path)
    assert cfg.shard_size == 8 and cfg.splits == ("pool",) and cfg.filters.regions.min_score == 0.4
    path.write_text("[[specialists]]\nname = 'dino'\n")
    with pytest.raises(ValueError, match="unknown specialist 'dino'"):
        RoundConfig.from_file(path)
    path.write_text("not = [toml")
    with pytest.raises(ValueError, match="does not parse"):
        RoundConfig.from_file(path)
    for text, fragment in (("shardsize = 4\n[[specialists]]\nname = 'rapidocr'\n", "unknown setting.s. 'shardsize'"),
                           ("[[specialists]]\nname = 'rapidocr'\nworkerz = 2\n", r"specialist 1 \(rapidocr\): unknown setting.s. 'workerz'"),
                           ("[[specialists]]\nname = 'rapidocr'\n[filters.regions]\nmin_scroe = 1\n", r"\[filters.regions\]: unknown"),
                           ("specialists = 3\n", "must be a list of tables")):
        path.write_text(text)
        with pytest.raises(ValueError, match=fragment):
            RoundConfig.from_file(path)


def test_the_label_grounder_grounds_captions_inside_a_round(ray_session, dataset, tiny_florence2):
    """Florence-2 describes ("a red house next to a tree") and detects (house, tree); the label
    grounder links the caption's phrases to those boxes, and the triplets are kept."""
    specialists = (SpecialistSpec("florence2", {"checkpoint": str(tiny_florence2), "tasks": ["<CAPTION>", "<OD>"],
                                                "max_new_tokens": 24}, cpus=0.5),
                   SpecialistSpec("label-grounder", cpus=0.5))
    lenient = FilterConfig(regions=RegionFilterConfig(min_score=0.0, max_area_fraction=1.0))
    summary = run_round(dataset, 1, RoundConfig(specialists=specialists, shard_size=8, filters=lenient))
    triplets = dataset.read("triplets", 1).to_pylist()
    assert summary.kept["triplets"] == len(triplets) > 0
    assert {t["specialist"] for t in triplets} == {"label-grounder"}
    assert {t["phrase"].split()[-1] for t in triplets} <= {"house", "tree"}

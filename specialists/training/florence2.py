"""The Florence-2 trainer: multitask examples from a training set's annotations, trained with the
CPU recipe (``florence2_train``) from the previous round's checkpoint, a user's pretrained one, or
from nothing (tokenizer included); served as a captioner / detector and, when it describes
images, as the grounder of its own descriptions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from specialists.florence2 import GROUNDING, OCR, READ, REGION_TO_DESCRIPTION
from specialists.training.trainer import Serving, Task, Trainer, TrainingSet

log = logging.getLogger(__name__)
ALL = ("<OD>", "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", GROUNDING, OCR, REGION_TO_DESCRIPTION)
BEAMS = {"<CAPTION>": 3}
"""Beam widths its serving decodes with where greedy is not best. Brief descriptions with 3 beams
(Florence-2's own examples decode every task so): CIDEr +0.09 / +0.13 on two worlds' target gold,
beyond the paired noise; detailed and more detailed ones gained nothing beyond it (more detailed
lost 0.05), at twice greedy's time (``bench/florence2_gold_tasks.py --beams 1 3``)."""
CARRIED = ("crop_regions", "region_size", "crop_ocr", "read_lines", "example_mean")
"""Recipe settings a fine-tuning keeps from the model it starts from unless its budget sets them:
a model that learnt region captions (and reading) on crops is served on crops, so it goes on
learning them so, and with the loss it learnt them under (a word read on a line drowns in the
mean over all target tokens; a refinement round's budget names none of them)."""


@dataclass(frozen=True)
class Florence2Budget:
    steps: int = 600
    batch: int = 16
    size: str = "cpu"
    """The architecture built from nothing (``specialists.florence2_build.SIZES``)."""
    tasks: tuple[str, ...] = ALL
    recipe: dict = field(default_factory=dict)
    """Extra Florence2TrainConfig settings (e.g. ``vision_steps``); see docs/FLORENCE2_RECIPE.md."""
    pretrained: str | None = None
    """A released checkpoint folder to fine-tune at bootstrap instead of building one."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1:
            raise ValueError(f"Florence-2 budget: steps and batch must be >= 1, got {self.steps} / {self.batch}")
        unknown = [t for t in self.tasks if t not in ALL]
        if unknown:
            raise ValueError(f"Florence-2 budget: unknown task(s) {unknown}; known: {', '.join(ALL)}")


class Florence2Trainer(Trainer):
    name = "florence2"
    tasks = (Task("<OD>", "region-text/detection_f1"), Task("<CAPTION>", "text/brief.cider"),
             Task("<DETAILED_CAPTION>", "text/detailed.cider"), Task("<MORE_DETAILED_CAPTION>", "text/more_detailed.cider"),
             Task(GROUNDING, "text-phrase-region/grounding_recall@1"), Task(OCR, "region-text/ocr_word_f1"),
             Task(REGION_TO_DESCRIPTION, "region-text/region_caption_word_f1"))
    """CIDEr gates descriptions (BLEU-4 let a model through whose detailed descriptions lost half their CIDEr)."""
    Budget = Florence2Budget
    prompted_tasks = frozenset({REGION_TO_DESCRIPTION, GROUNDING})
    """Region captions describe the boxes they are given, grounding grounds the descriptions it is
    given: measured given the gold boxes and the gold descriptions."""

    def served_tasks(self, manifest: dict) -> list[str]:
        return [t for t in manifest.get("tasks", []) if t in ALL]

    def prompted(self, manifest: dict) -> frozenset[str]:
        """Its OCR too when it reads the crops of object boxes (the recipe's ``crop_ocr``) or the
        text lines another reader found (``read_lines``): it reads what the round's detectors or
        RapidOCR kept, so it is measured given the gold boxes (text lines without their text)."""
        return self.prompted_tasks | _on_boxes(manifest) | ({OCR} if _reads_lines(manifest) else set())

    def check(self, manifest: dict) -> None:
        """The checkpoint loads and its tokenizer is the one its model was trained with."""
        from specialists.florence2 import load_florence2

        load_florence2(manifest["weights"])

    def _examples(self, data: TrainingSet, budget: Florence2Budget):
        from specialists.training.florence2_examples import build_examples

        return build_examples(data.tables["texts"], data.tables["regions"], data.tables["triplets"], data.sizes,
                              budget.tasks)

    def _config(self, budget: Florence2Budget, previous: dict | None, device: str):
        from specialists.training.florence2_train import Florence2TrainConfig

        recipe = dict(budget.recipe)
        warm = previous is not None or budget.pretrained is not None
        if warm:
            recipe.pop("vision_steps", None)  # the vision tower is warm already
        learnt = (previous or {}).get("config") or {}
        for setting in CARRIED:  # how the model reads its inputs travels with it into its fine-tunings
            if setting not in recipe and learnt.get(setting) is not None:
                recipe[setting] = learnt[setting]
        return Florence2TrainConfig(steps=budget.steps, batch_size=budget.batch, device=device, lr=3e-4 if warm else 1e-3,
                                    save_every=max(25, budget.steps // 8), **recipe)

    def settings(self, data: TrainingSet, budget: Florence2Budget, previous: dict | None, device: str) -> dict:
        present = sorted({e.task for e in self._examples(data, budget)})
        return {**self._config(budget, previous, device).to_dict(), "size": budget.size, "tasks": present,
                "from": previous["weights"] if previous else budget.pretrained}

    def train(self, data: TrainingSet, folder: Path, budget: Florence2Budget, previous: dict | None, device: str) -> dict:
        from specialists.florence2 import load_florence2
        from specialists.florence2_build import SIZES, build_model, build_processor, save_checkpoint, train_tokenizer
        from specialists.training.florence2_train import train_florence2

        examples = self._examples(data, budget)
        present = sorted({e.task for e in examples})
        missing = [t for t in budget.tasks if t not in present]
        if missing:
            log.warning("Florence-2: no kept annotations for %s; training on %s only", ", ".join(missing),
                        ", ".join(present) or "nothing")
        if not examples:
            raise ValueError("no annotations of any Florence-2 task to train on")
        start_from = previous["weights"] if previous else budget.pretrained
        if start_from:
            model, processor = load_florence2(start_from, device)
        else:
            corpus = data.tables["texts"].column("text").to_pylist() + data.tables["regions"].column("label").drop_null().to_pylist()
            tokenizer = train_tokenizer(corpus, vocab_size=2000)
            size = SIZES[budget.size]
            processor = build_processor(tokenizer, size.image_size, size.stride)
            model = build_model(size, tokenizer)
        config = self._config(budget, previous, device)
        images = {i: data.pixels(i) for i in {e.image_id for e in examples}}
        result = train_florence2(model, processor, examples, images, folder / "state", config, fresh=not start_from)
        checkpoint = save_checkpoint(model, processor, folder / "checkpoint")
        return {"weights": str(checkpoint), "tasks": present, "missing_tasks": missing, "examples": len(examples),
                "task_counts": result.tasks, "config": config.to_dict(), "steps": result.steps,
                "resumed_from": result.resumed_from, "train_seconds": result.seconds,
                "examples_per_second": result.examples_per_second}

    def calibrate(self, manifest: dict, data: TrainingSet, device: str) -> dict:
        """Its ``<OD>`` confidence floor, chosen as YOLO's is (``calibrate_confidence``) on boxes it
        finds as a round serves it: its scores are token probabilities, and each crop stage of its
        recipe lowers them (docs/FLORENCE2_RECIPE.md, "A calibrated floor for its boxes"). A model
        without ``<OD>`` examples, or without calibration images, has none (the round's 0.25)."""
        from specialists.registry import build
        from specialists.training.calibration import calibrate_confidence, detect

        if "<OD>" not in self.served_tasks(manifest) or not len(data):
            return {}
        served = self.serve(manifest, ["<OD>"], device)[0]  # its boxes raw: the floor is what is chosen
        detector = build(served.specialist, **served.options)
        ids = data.ids()
        conf, f1 = calibrate_confidence(detect(detector, data, ids), data.tables["regions"], ids)
        log.info("Florence-2 <OD> floor %.2f: detection F1 %.3f on %d calibration images", conf, f1, len(ids))
        return {"conf": conf, "calibration": {"images": len(ids), "f1": round(f1, 4)}}

    def serve(self, manifest: dict, tasks: Sequence[str], device: str) -> list[Serving]:
        """Its own tasks in one specialist; grounding in a second one that grounds the round's
        descriptions (a round without any leaves it out); and in a third, the tasks that take the
        round's regions: region captions of the object boxes the round's detectors kept, each on its
        crop when the model was trained on crops, read there too when it learnt that (``crop_ocr``),
        and its OCR, when it learnt to read text lines (``read_lines``), as ``<OCR>`` on the tight
        crop of each text line the round's readers found."""
        trained = manifest.get("config") or {}
        on_boxes = {REGION_TO_DESCRIPTION} | _on_boxes(manifest)
        lines = {OCR} if _reads_lines(manifest) else set()
        own = sorted(t for t in tasks if t != GROUNDING and t not in on_boxes | lines)
        floor = manifest.get("conf") if "<OD>" in own else None  # its calibrated floor, where it has one
        out = [Serving("florence2", {"checkpoint": manifest["weights"], "tasks": own, "max_new_tokens": 128,
                                     "batch_size": 16, "device": device, "task_beams": dict(BEAMS)},
                       min_score=floor, scored_kind="object")] if own else []
        if GROUNDING in tasks:
            out.append(Serving("florence2", {"checkpoint": manifest["weights"], "tasks": [GROUNDING], "max_new_tokens": 64,
                                             "batch_size": 16, "device": device}, key="florence2-grounder"))
        boxed = sorted(t for t in tasks if t in on_boxes)
        reads = [READ] if OCR in tasks and lines else []
        if boxed or reads:  # one specialist takes the round's regions (a second would wait on the first's)
            crops = {"region_margin": trained.get("crop_regions"), "region_size": trained.get("region_size"),
                     "region_ocr": OCR in boxed} if boxed else {}  # on crops when it learnt them so (crop_regions)
            out.append(Serving("florence2", {"checkpoint": manifest["weights"], "tasks": boxed + reads,
                                             "max_new_tokens": 32, "batch_size": 32, "device": device, **crops,
                                             "read_margin": trained["read_lines"] if reads else None},
                               key="florence2-regions"))
        return out


def _on_boxes(manifest: dict) -> set[str]:
    """The tasks besides region captions a trained model serves on the kept boxes' crops."""
    return {OCR} if (manifest.get("config") or {}).get("crop_ocr") and not _reads_lines(manifest) else set()


def _reads_lines(manifest: dict) -> bool:
    """Whether a trained model reads its OCR on text lines' crops (the recipe's ``read_lines``)."""
    return (manifest.get("config") or {}).get("read_lines") is not None

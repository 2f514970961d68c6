"""Profiles of ``fld run``: how big a world, how long each specialist trains, how many rounds.

``quick`` is a smoke test (a few minutes), ``default`` is what ``make run`` runs on a 2-core CPU
machine in under 15 minutes, ``large`` is for benchmarks and GPUs. Each draws its world with a
domain shift (``engine.world.shift``): the seed split from the seed domain, the pool and gold from
the target domain, and a seed-gold split to show round 0's quality where it was trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from engine.world.config import WorldConfig
from engine.world.shift import SHIFTS, shift_named
from specialists.training.florence2 import Florence2Budget
from specialists.training.registry import trainer_for
from specialists.training.sam import SamBudget
from specialists.training.trainer import Trainer
from specialists.training.yolo import YoloBudget

Budgets = dict[str, Any]
"""Per trainer name, its ``Budget`` (``specialists.training``); a trainer not named trains with
its Budget's defaults."""


def budget_for(budgets: Budgets, trainer: Trainer) -> Any:
    budget = budgets.get(trainer.name) or trainer.Budget()
    if not isinstance(budget, trainer.Budget):
        raise ValueError(f"the budget of {trainer.name} must be a {trainer.Budget.__name__}, got {type(budget).__name__}")
    return budget


@dataclass(frozen=True)
class Profile:
    name: str
    world_images: int
    seed_fraction: float
    gold_fraction: float
    bootstrap: Budgets
    refine: Budgets
    refinement_rounds: int = 1
    device: str = "cpu"
    seed_gold_fraction: float = 0.0
    """The seed domain's held-out gold (round 0's quality where it was trained)."""
    shift: str = "none"
    """The world's domain shift (``engine.world.shift.SHIFTS``): pool and gold from the target domain."""
    world_seed: int = 0
    """The sample its world draws (``fld run --world-seed`` and the benches draw others)."""
    domain_seed: int = 0
    """The domains its world draws from: the same for every profile, so the zoo (trained on another
    sample of the seed domain) serves each of them."""
    fine_tune: dict[str, tuple] = field(default_factory=dict)
    """Per trainer name, the budgets of its bootstrapped model's later trainings, in order, each from
    the weights the one before left, on the same seed split (``fld zoo build --fine-tune`` runs the
    next one; the zoo's Florence-2 learns region captions on crops, then boxes on cropped images: CPU
    stages after its GPU training)."""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.world_images < 3 or self.refinement_rounds < 0:
            raise ValueError("a profile needs >= 3 world images and >= 0 refinement rounds")
        if not all(isinstance(v, tuple) and v for v in self.fine_tune.values()):
            raise ValueError("a profile's fine_tune gives each trainer a non-empty tuple of budgets, in order")
        if self.shift not in SHIFTS:
            raise ValueError(f"unknown shift {self.shift!r}; known: {', '.join(SHIFTS)}")

    def to_dict(self) -> dict:
        return asdict(self)

    def world(self, seed: int | None = None) -> WorldConfig:
        """The configuration of this profile's world (of sample ``seed``, default its own)."""
        return WorldConfig(images=self.world_images, seed=self.world_seed if seed is None else seed,
                           domain_seed=self.domain_seed, seed_fraction=self.seed_fraction,
                           gold_fraction=self.gold_fraction, seed_gold_fraction=self.seed_gold_fraction,
                           shift=shift_named(self.shift))

    def on(self, device: str) -> Profile:
        return replace(self, device=device)

    def pretrained(self, name: str, checkpoint: str) -> Profile:
        """This profile with specialist ``name`` bootstrapped from a released ``checkpoint``."""
        trainer = trainer_for(name)
        budget = budget_for(self.bootstrap, trainer)
        if "pretrained" not in {f.name for f in fields(budget)}:
            raise ValueError(f"{name} cannot start from a pretrained checkpoint")
        return replace(self, bootstrap={**self.bootstrap, name: replace(budget, pretrained=checkpoint)})


READING = {"flip_od": True, "crop_od": 4, "read_lines": 0.3, "ocr_views": 4, "example_mean": True,
           "task_weights": {"<OD>": 6.0, "<REGION_TO_DESCRIPTION>": 4.0, "<OCR>": 8.0}}
"""The zoo Florence-2's recipe once it reads text lines: the stage before's (mirrored ``<OD>``, four
crops of each) with ``<OCR>`` on the lines' tight crops, each example's loss weighed alike."""

PROFILES = {
    "quick": Profile("quick", world_images=160, seed_fraction=0.45, gold_fraction=0.2, seed_gold_fraction=0.1,
                     shift="field",
                     bootstrap={"yolo": YoloBudget(epochs=3, imgsz=160), "sam": SamBudget(steps=40),
                                "florence2": Florence2Budget(steps=40)},
                     refine={"yolo": YoloBudget(epochs=1, imgsz=160), "sam": SamBudget(steps=10),
                             "florence2": Florence2Budget(steps=10)}),
    "default": Profile("default", world_images=560, seed_fraction=0.43, gold_fraction=0.27, seed_gold_fraction=0.07,
                       shift="field",
                       bootstrap={"yolo": YoloBudget(epochs=14, imgsz=160), "sam": SamBudget(steps=100),
                                  "florence2": Florence2Budget(steps=300)},
                       refine={"yolo": YoloBudget(epochs=3, imgsz=160), "sam": SamBudget(steps=30),
                               "florence2": Florence2Budget(steps=30)},
                       refinement_rounds=2),
    "large": Profile("large", world_images=5000, seed_fraction=0.4, gold_fraction=0.1, seed_gold_fraction=0.05,
                     shift="field",
                     bootstrap={"yolo": YoloBudget(epochs=60, imgsz=320), "sam": SamBudget(steps=2000),
                                "florence2": Florence2Budget(steps=6000, batch=32)},
                     refine={"yolo": YoloBudget(epochs=10, imgsz=320), "sam": SamBudget(steps=500),
                             "florence2": Florence2Budget(steps=2000, batch=32)},
                     refinement_rounds=3),
    "zoo": Profile("zoo", world_images=1000, seed_fraction=0.6, gold_fraction=0.15, seed_gold_fraction=0.1,
                   shift="field", world_seed=1000,
                   bootstrap={"yolo": YoloBudget(epochs=30, imgsz=320), "sam": SamBudget(steps=1500),
                              "florence2": Florence2Budget(steps=2800, batch=64, size="small", recipe={"flip_od": True})},
                   refine={"yolo": YoloBudget(epochs=3, imgsz=320), "sam": SamBudget(steps=30),
                           "florence2": Florence2Budget(steps=80)},
                   fine_tune={"florence2": (Florence2Budget(steps=400, batch=16, size="small", recipe={
                       "flip_od": True, "crop_regions": 0.2, "region_size": 112,
                       "task_weights": {"<OD>": 3.0, "<REGION_TO_DESCRIPTION>": 8.0}}),
                                              Florence2Budget(steps=1500, batch=16, size="small", recipe={
                       "flip_od": True, "crop_od": 2,
                       "task_weights": {"<OD>": 6.0, "<REGION_TO_DESCRIPTION>": 4.0}}),
                                              Florence2Budget(steps=600, batch=16, size="small", recipe={
                       "flip_od": True, "crop_od": 4,
                       "task_weights": {"<OD>": 6.0, "<REGION_TO_DESCRIPTION>": 4.0}}),
                                              Florence2Budget(steps=600, batch=16, size="small", recipe=READING),
                                              Florence2Budget(steps=600, batch=16, size="small",
                                                              recipe={**READING, "corrupt_views": True}))}),
}
"""``zoo`` trains the round-0 models that ``make run`` starts from (``fld zoo build``, hours on 2
cores): another sample (world seed 1000) of the same domains as every other profile's world. Its
Florence-2 (``small``, 2800 steps of 64) is a GPU job: 5 minutes on an H200, about 7 hours on 2
CPU cores (``bench/florence2_speed.py``). Its first ``fine_tune`` stage then teaches that Florence-2
region captions on crops of their boxes at 112 px, beside every other task (about 10 minutes on 2
CPU cores; docs/FLORENCE2_RECIPE.md, "Region captions on crops"); its second teaches ``<OD>`` on mirrored
and cropped images (``crop_od``), whose box lists it cannot learn by heart (about 32 minutes on 2 CPU
cores; docs/FLORENCE2_RECIPE.md, "Cropped ``<OD>`` examples"), its third with four crops of each
(about 12 minutes), and its fourth to read text lines on their tight crops beside every task before
(``read_lines``, each example's loss weighed alike: ``example_mean``; 20 minutes on a slow 2-core host;
docs/FLORENCE2_RECIPE.md, "Reading text lines"), and its fifth the same with each line's jittered views
through a worse camera (``corrupt_views``: lighting, colour, blur, noise, JPEG; 16 minutes on a 2-core
host), so that it reads the
target domain's lines as well as the seed's (docs/FLORENCE2_RECIPE.md, "Reading through a worse
camera"). Every zoo build chooses the model's ``<OD>`` confidence floor on the zoo's
calibration sample (``engine.loop.zoo.calibration_world``) before measuring it."""


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None

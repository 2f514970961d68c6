"""Profiles of ``fld run``: how big a world, how long each specialist trains, how many rounds.

``quick`` is a smoke test (a few minutes), ``default`` is what ``make run`` runs on a 2-core CPU
machine in under 15 minutes, ``large`` is for benchmarks and GPUs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class TrainingBudget:
    """How long each specialist trains, at bootstrap and at each refinement round."""

    yolo_epochs: int = 30
    yolo_imgsz: int = 320
    sam_steps: int = 300
    florence2_steps: int = 600
    florence2_batch: int = 16
    florence2_size: str = "cpu"
    florence2_tasks: tuple[str, ...] = ("<OD>", "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>",
                                        "<CAPTION_TO_PHRASE_GROUNDING>")
    florence2_recipe: dict = field(default_factory=dict)
    """Extra Florence2TrainConfig settings (e.g. ``vision_steps``); see docs/FLORENCE2_RECIPE.md."""

    def __post_init__(self) -> None:
        if min(self.yolo_epochs, self.sam_steps, self.florence2_steps, self.florence2_batch) < 1:
            raise ValueError("training budgets must be >= 1")
        if self.yolo_imgsz % 32:
            raise ValueError(f"yolo_imgsz must be a multiple of 32, got {self.yolo_imgsz}")


@dataclass(frozen=True)
class Profile:
    name: str
    world_images: int
    seed_fraction: float
    gold_fraction: float
    bootstrap: TrainingBudget
    refine: TrainingBudget
    refinement_rounds: int = 1
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.world_images < 3 or self.refinement_rounds < 0:
            raise ValueError("a profile needs >= 3 world images and >= 0 refinement rounds")

    def to_dict(self) -> dict:
        return asdict(self)

    def on(self, device: str) -> Profile:
        return replace(self, device=device)


PROFILES = {
    "quick": Profile("quick", world_images=160, seed_fraction=0.5, gold_fraction=0.2,
                     bootstrap=TrainingBudget(yolo_epochs=3, yolo_imgsz=160, sam_steps=40, florence2_steps=40),
                     refine=TrainingBudget(yolo_epochs=1, yolo_imgsz=160, sam_steps=10, florence2_steps=10)),
    "default": Profile("default", world_images=400, seed_fraction=0.6, gold_fraction=0.1,
                       bootstrap=TrainingBudget(yolo_epochs=14, yolo_imgsz=160, sam_steps=100, florence2_steps=300),
                       refine=TrainingBudget(yolo_epochs=3, yolo_imgsz=160, sam_steps=30, florence2_steps=80)),
    "large": Profile("large", world_images=5000, seed_fraction=0.4, gold_fraction=0.1,
                     bootstrap=TrainingBudget(yolo_epochs=60, yolo_imgsz=320, sam_steps=2000, florence2_steps=6000,
                                              florence2_batch=32),
                     refine=TrainingBudget(yolo_epochs=10, yolo_imgsz=320, sam_steps=500, florence2_steps=2000,
                                           florence2_batch=32),
                     refinement_rounds=3),
}


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None

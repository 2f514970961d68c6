"""Configuration of a synthetic world, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class WorldConfig:
    """How many scenes, how they are drawn, and how they are split.

    Splits are assigned by position in a fixed permutation of the image indices, so the same
    seed always gives the same split of the same images.
    """

    images: int = 200
    seed: int = 0
    width: int = 320
    height: int = 240
    min_objects: int = 1
    max_objects: int = 8
    seed_fraction: float = 0.3
    gold_fraction: float = 0.2
    jpeg_fraction: float = 0.2
    sign_probability: float = 0.4
    min_visible: float = 0.5
    """An object may be occluded by later ones only while this share of it stays visible."""

    def __post_init__(self) -> None:
        if self.images < 3:
            raise ValueError(f"a world needs at least 3 images (one per split: seed, pool, gold), got {self.images}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not (64 <= self.width <= 4096 and 64 <= self.height <= 4096):
            raise ValueError(f"width and height must be within 64..4096, got {self.width}x{self.height}")
        if not 1 <= self.min_objects <= self.max_objects <= 12:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= 12, got {self.min_objects}..{self.max_objects}"
            )
        for name in ("seed_fraction", "gold_fraction", "jpeg_fraction", "sign_probability", "min_visible"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.seed_fraction + self.gold_fraction >= 1.0:
            raise ValueError("seed_fraction + gold_fraction must leave room for the pool (< 1)")

    def split_counts(self) -> dict[str, int]:
        gold = max(1, round(self.images * self.gold_fraction))
        seed = max(1, round(self.images * self.seed_fraction))
        pool = self.images - gold - seed
        if pool < 1:
            raise ValueError(f"{self.images} images leave no pool after {seed} seed and {gold} gold")
        return {"seed": seed, "pool": pool, "gold": gold}

    def to_dict(self) -> dict:
        return asdict(self)

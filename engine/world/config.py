"""Configuration of a synthetic world, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from engine.world.shift import Domain, Shift, domain_for


@dataclass(frozen=True)
class WorldConfig:
    """How many scenes, how they are drawn, and how they are split.

    Splits are assigned by position in a fixed permutation of the image indices, so the same
    seed always gives the same split of the same images.
    """

    images: int = 200
    seed: int = 0
    """Draws the scenes and the split: two seeds give two samples of the same domains."""
    domain_seed: int | None = None
    """Draws what defines the domains (the colours the seed domain never shows); None: ``seed``.
    Worlds that share it share their seed domain, so models trained on one (the zoo) serve another."""
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
    seed_gold_fraction: float = 0.0
    """Held-out truth of the seed domain (split ``seed-gold``): round 0's quality where it was
    trained, beside its quality on the target domain's gold."""
    shift: Shift = field(default_factory=Shift)
    """How the pool and gold (target domain) differ from the seed and seed-gold (seed domain)."""

    def __post_init__(self) -> None:
        if self.images < 3:
            raise ValueError(f"a world needs at least 3 images (one per split: seed, pool, gold), got {self.images}")
        if self.seed < 0 or (self.domain_seed is not None and self.domain_seed < 0):
            raise ValueError(f"seed and domain_seed must be >= 0, got {self.seed} / {self.domain_seed}")
        if not (64 <= self.width <= 4096 and 64 <= self.height <= 4096):
            raise ValueError(f"width and height must be within 64..4096, got {self.width}x{self.height}")
        if not 1 <= self.min_objects <= self.max_objects <= 12:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= 12, got {self.min_objects}..{self.max_objects}"
            )
        if isinstance(self.shift, dict):
            object.__setattr__(self, "shift", Shift.from_dict(self.shift))
        for name in ("seed_fraction", "gold_fraction", "jpeg_fraction", "sign_probability", "min_visible",
                     "seed_gold_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.seed_fraction + self.gold_fraction + self.seed_gold_fraction >= 1.0:
            raise ValueError("seed_fraction + gold_fraction + seed_gold_fraction must leave room for the pool (< 1)")

    def split_counts(self) -> dict[str, int]:
        """Images per split; ``seed-gold`` only when the world has one."""
        gold = max(1, round(self.images * self.gold_fraction))
        seed = max(1, round(self.images * self.seed_fraction))
        seed_gold = round(self.images * self.seed_gold_fraction)
        pool = self.images - gold - seed - seed_gold
        if pool < 1:
            raise ValueError(f"{self.images} images leave no pool after {seed} seed, {gold} gold and {seed_gold} seed-gold")
        counts = {"seed": seed, "pool": pool, "gold": gold}
        return {**counts, "seed-gold": seed_gold} if seed_gold else counts

    def domain(self, split: str) -> Domain:
        """What ``split``'s scenes are drawn from (seed domain: seed, seed-gold; target: pool, gold)."""
        return domain_for(split, self.domain_key, self.min_objects, self.max_objects, self.min_visible, self.shift)

    @property
    def domain_key(self) -> int:
        return self.seed if self.domain_seed is None else self.domain_seed

    def domain_settings(self) -> dict:
        """Everything that decides what the seed and target domains look like, and nothing that
        only decides which scenes are drawn (seed, image count, split shares)."""
        values = self.to_dict()
        for sample_only in ("images", "seed", "domain_seed", "seed_fraction", "gold_fraction", "seed_gold_fraction"):
            values.pop(sample_only)
        return {**values, "domain_seed": self.domain_key}

    def to_dict(self) -> dict:
        return asdict(self)

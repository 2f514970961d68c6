"""What a round runs: which specialists (by registry name, with options), how many workers each,
the filters, the shard size and where Ray is. Read from a TOML or JSON file, or built in code."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.round.annotate import stage_order
from filters.captions import CaptionCheckConfig
from filters.fusion import FusionConfig
from filters.pipeline import FilterConfig
from filters.regions import RegionFilterConfig
from filters.text import TextFilterConfig
from filters.triplets import TripletFilterConfig
from schemas import SPLITS
from schemas.hashing import canonical, fingerprint
from specialists.base import Specialist
from specialists.registry import build, factory_of


@dataclass(frozen=True)
class SpecialistSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    """Unique name of this pool in the round (default: ``name``); two pools of one specialist
    (e.g. a Florence-2 captioner and a Florence-2 grounder of its captions) need two keys."""
    workers: int = 1
    """Actors in this specialist's pool."""
    cpus: float | None = None
    """CPUs each actor reserves (fractions let several models share a small machine); default:
    what the specialist declares (its ``Resources``)."""
    gpus: float | None = None
    """GPUs each actor reserves; default: what the specialist declares (1 when its device is cuda)."""

    def __post_init__(self) -> None:
        factory_of(self.name)  # an unknown name is refused here, listing the known ones
        if not self.key:
            object.__setattr__(self, "key", self.name)
        if self.workers < 1 or (self.cpus is not None and self.cpus <= 0) or (self.gpus is not None and self.gpus < 0):
            raise ValueError(f"{self.name}: workers must be >= 1, cpus > 0 and gpus >= 0")

    def build(self) -> Specialist:
        """The configured specialist, not loaded (its constructor is cheap: no weights are read)."""
        return build(self.name, **self.options)

    def resources(self) -> tuple[float, float]:
        """(cpus, gpus) per actor: the spec's own, else the specialist's declared resources."""
        if self.cpus is not None and self.gpus is not None:
            return self.cpus, self.gpus
        declared = self.build().resources
        return (self.cpus if self.cpus is not None else declared.cpus,
                self.gpus if self.gpus is not None else declared.gpus)


PLACEMENTS = ("auto", "fused", "pools")
"""``fused``: every worker holds every specialist and the filters and annotates whole shards (data
parallel: no pixels or tables handed between processes, and every core busy whatever the models'
relative cost; each worker holds every model). ``pools``: one actor pool per specialist, sized
by its ``workers``/``cpus``/``gpus``, and a filter pool, shards flowing stage to stage (pipeline
parallel: each model on the resources it declares, e.g. a GPU detector beside CPU OCR)."""


@dataclass(frozen=True)
class RoundConfig:
    specialists: tuple[SpecialistSpec, ...]
    filters: FilterConfig = field(default_factory=FilterConfig)
    shard_size: int = 32
    splits: tuple[str, ...] = ("pool", "gold", "unlabelled")
    """Images of these splits are annotated (never seed: it is the specialists' training data)."""
    max_in_flight: int = 0
    """Shards in the pipeline at once: enough to keep every worker busy, few enough to bound
    memory (0: two per worker of the largest pool, at least four)."""
    placement: str = "auto"
    """How the specialists are laid out on the cluster (see PLACEMENTS); ``auto``: ``pools`` when
    any specialist reserves a GPU, else ``fused``. Rows do not depend on it."""
    fused_workers: int = 0
    """Workers of the ``fused`` placement (0: one per CPU of the cluster); each reserves its share
    of the cluster's CPUs and runs that many threads."""
    ray_address: str | None = None
    """None: start Ray on this machine. Else an existing cluster ("auto", "ray://host:10001", ...)."""
    crash_tries: int = 2
    """Times an image may kill a worker's process, run alone, before it gets a ``failures`` row."""
    max_worker_deaths: int = 12
    """Worker processes the round replaces in all; one more death stops it (a rerun resumes)."""

    def __post_init__(self) -> None:
        if not self.specialists:
            raise ValueError("a round needs at least one specialist")
        keys = [s.key for s in self.specialists]
        if len(set(keys)) != len(keys):
            raise ValueError(f"each specialist key may appear once per round, got {keys} (set `key` to tell them apart)")
        unknown = [s for s in self.splits if s not in SPLITS]
        if unknown or "seed" in self.splits:
            raise ValueError(f"splits must be among {', '.join(s for s in SPLITS if s != 'seed')}, got {list(self.splits)}")
        if self.shard_size < 1 or self.crash_tries < 1:
            raise ValueError("shard_size and crash_tries must be >= 1")
        if self.max_in_flight < 0 or self.fused_workers < 0:
            raise ValueError("max_in_flight and fused_workers must be >= 0 (0: chosen from the cluster)")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")
        if self.max_worker_deaths < self.crash_tries:
            raise ValueError(f"max_worker_deaths ({self.max_worker_deaths}) must be at least crash_tries "
                             f"({self.crash_tries}): else no image could ever be marked failed")
        self.stages()  # specialists that need each other, or a table nobody makes: refused now, before any model loads

    def stages(self) -> list[list[str]]:
        """Specialist keys in dependency order (see ``stage_order``), from what each configured
        specialist makes and takes."""
        built = {s.key: s.build() for s in self.specialists}
        return stage_order({k: tuple(s.needs) for k, s in built.items()}, {k: tuple(s.produces) for k, s in built.items()})

    def resolved_placement(self) -> str:
        """``fused`` or ``pools``: the configured placement, or what ``auto`` picks."""
        if self.placement != "auto":
            return self.placement
        return "pools" if any(spec.resources()[1] > 0 for spec in self.specialists) else "fused"

    def rows_fingerprint(self) -> str:
        """A hash of what decides a round's rows (specialists with their options, filters, splits);
        not of how it runs (workers, CPUs, shard size, shards in flight, the cluster)."""
        return fingerprint({"specialists": [(s.name, s.key, s.options) for s in self.specialists],
                            "filters": asdict(self.filters), "splits": list(self.splits)})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=canonical)

    @classmethod
    def from_dict(cls, data: dict) -> RoundConfig:
        """A config from plain data (a parsed TOML or JSON file); an unknown key is named with the known ones."""
        filters = _known(data.get("filters", {}), {"text", "regions", "fusion", "captions", "triplets"}, "[filters]")
        specialists = []
        if not isinstance(data.get("specialists", []), list):
            raise ValueError("`specialists` must be a list of tables ([[specialists]] in TOML)")
        for k, spec in enumerate(data.get("specialists", [])):
            where = f"specialist {k + 1} ({spec.get('name', 'no name')})" if isinstance(spec, dict) else f"specialist {k + 1}"
            specialists.append(SpecialistSpec(**_known(spec, _fields(SpecialistSpec), where)))
        sections = {"text": TextFilterConfig, "regions": RegionFilterConfig, "fusion": FusionConfig,
                    "captions": CaptionCheckConfig, "triplets": TripletFilterConfig}
        made = {name: kind(**{k: tuple(v) if isinstance(v, list) and name in ("fusion", "captions") else v
                              for k, v in _known(filters.get(name, {}), _fields(kind), f"[filters.{name}]").items()})
                for name, kind in sections.items()}
        top = _known(data, _fields(cls), "the round config")
        return cls(specialists=tuple(specialists), filters=FilterConfig(**made),
                   **{k: tuple(v) if isinstance(v, list) else v for k, v in top.items() if k not in ("specialists", "filters")})

    @classmethod
    def from_file(cls, path: str | Path) -> RoundConfig:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"round config {path} does not exist")
        text = path.read_text()
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"round config {path} does not parse: {err}") from None
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:  # unknown keys, bad values, specialists that cannot be ordered
            raise ValueError(f"round config {path}: {err}") from None


def _fields(kind: type) -> set[str]:
    return {f.name for f in fields(kind)}


def _known(section: object, known: set[str], where: str) -> dict:
    """``section`` as a dict whose keys are all in ``known``; else a ValueError naming the odd ones."""
    if not isinstance(section, dict):
        raise ValueError(f"{where} must be a table of settings, got {type(section).__name__}")
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
    return section

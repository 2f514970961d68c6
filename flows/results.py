"""What the flows return: small typed results (paths, counts, metrics), never images or tables."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from engine.round.run import RoundSummary


@dataclass(frozen=True)
class Ingested:
    source: str
    split: str
    ok: int
    errors: int
    duplicates: int
    already_ingested: int


@dataclass
class RoundOutcome:
    """One round of the data engine: its run, its gold metrics and its statistics."""

    round: int
    kind: str
    summary: RoundSummary
    metrics: dict[str, float | None]
    """Gold metrics (``family/metric``); empty without a gold split."""
    stats: list[dict]
    ingested: list[Ingested] = field(default_factory=list)
    gates: dict[str, dict] = field(default_factory=dict)
    """Per ``specialist:task``: the gate that decided who served it."""
    counts: dict[str, float | None] = field(default_factory=dict)
    """The round summary's counts, drops and changes (``metrics`` rows of family ``round``)."""
    stop: str | None = None
    """Why the data engine stopped after this round, if it did."""

    def to_dict(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "summary": self.summary.to_dict(),
                "ingested": [asdict(i) for i in self.ingested]}


@dataclass
class RunOutcome:
    """``fld run``: where the world and dataset are, the bootstrap's gold metrics and gates, the rounds."""

    world: str
    data: str
    ingested: list[Ingested]
    bootstrap: dict
    rounds: list[RoundOutcome]

    def to_dict(self) -> dict:
        return {"world": self.world, "data": self.data, "ingested": [asdict(i) for i in self.ingested],
                "bootstrap": self.bootstrap, "rounds": [r.to_dict() for r in self.rounds]}

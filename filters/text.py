"""Text filters: empty, overlong, non-language and degenerate texts (cheap checks, before
parsing), then FLD-5B's parse-based checks: excessive objects and too-low complexity, and a
noun phrase listed twice in a row ("a green square and a green square": a generator's repetition
loop); and across a shard's images, one description repeated on most of them (a collapsed
captioner)."""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa

from filters.decision import Decision
from filters.phrases import ParsedText, PhraseParser
from schemas.tables import GRANULARITIES

WORD = re.compile(r"\w+", re.UNICODE)
LIST_JOIN = re.compile(r"\s*(,|,?\s*\b(and|or)\b)\s*", re.IGNORECASE)
"""What joins two items of a list: a comma, "and" or "or"."""


@dataclass(frozen=True)
class TextFilterConfig:
    max_chars: int = 2000
    min_tokens: int = 2
    min_tokens_by_granularity: dict = field(default_factory=lambda: {"detailed": 8, "more_detailed": 16})
    """A description of these granularities needs at least this many words: about a quarter of
    FLD-5B's mean (31.65 and 70.53 tokens; the embedded world's shortest are 17 and 19 words). A
    retrained Florence-2 wrote "The image shows" as the more detailed description of 16 of 280
    images in ``make run``'s third round, and no other check caught it."""
    min_letter_ratio: float = 0.6
    """Share of letters among the non-space characters (emoji, digits and symbols are not)."""
    min_latin_ratio: float = 0.9
    """Share of Latin letters among the letters: our parser and captions are English."""
    max_repeat_run: int = 3
    """The same word this many times in a row is degenerate generation."""
    min_unique_ratio: float = 0.3
    max_objects: int = 40
    min_complexity: float = 1.0
    drop_listed_twice: bool = True
    """Drop a text listing one noun phrase twice in a row ("two boats and two boats"); one that
    repeats a phrase elsewhere ("the green house is above the green house") is kept."""
    max_repeat_share: float = 0.5
    """A description (same granularity, same words) given to more than this share of a shard's
    described images is a collapsed captioner's, not a description of each image."""
    repeat_min_images: int = 8
    """...once it is on at least this many images (a few alike images may share a description;
    the loop's shards hold 16, so a captioner that writes one sentence for most is caught)."""

    def __post_init__(self) -> None:
        for name in ("min_letter_ratio", "min_latin_ratio", "min_unique_ratio", "max_repeat_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        for name in ("max_chars", "min_tokens", "max_repeat_run", "max_objects", "repeat_min_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_complexity < 0:
            raise ValueError(f"min_complexity must be >= 0, got {self.min_complexity}")
        by = self.min_tokens_by_granularity
        if not isinstance(by, dict) or set(by) - set(GRANULARITIES) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in by.values()):
            raise ValueError(f"min_tokens_by_granularity maps granularities ({', '.join(GRANULARITIES)}) to "
                             f"word counts >= 1, got {by!r}")

    def min_words(self, granularity: str | None) -> int:
        """The fewest words a text of ``granularity`` (None: not a description) may have."""
        return max(self.min_tokens, self.min_tokens_by_granularity.get(granularity, 0))


def _latin(ch: str) -> bool:
    return "LATIN" in unicodedata.name(ch, "")


def surface_reason(text: str | None, config: TextFilterConfig, granularity: str | None = None) -> str | None:
    """Why a text (a description of ``granularity``, when given) is unusable before parsing it, or None."""
    if text is None or not text.strip():
        return "empty"
    if len(text) > config.max_chars:
        return f"too_long: {len(text)} characters > {config.max_chars}"
    visible = [c for c in text if not c.isspace()]
    letters = [c for c in visible if c.isalpha()]
    if len(letters) < config.min_letter_ratio * len(visible):
        return f"non_language: {len(letters)} letters of {len(visible)} characters"
    if sum(map(_latin, letters)) < config.min_latin_ratio * len(letters):
        return "not_english: mostly non-Latin letters"
    words = [w.lower() for w in WORD.findall(text)]
    if len(words) < (least := config.min_words(granularity)):
        return f"too_short: {len(words)} word(s)" + (f" for a {granularity} description (min {least})"
                                                      if least > config.min_tokens else "")
    run = longest = 1
    for a, b in zip(words, words[1:]):
        run = run + 1 if a == b else 1
        longest = max(longest, run)
    if longest >= config.max_repeat_run:
        return f"repetition: a word {longest} times in a row"
    if len(words) >= 8 and len(set(words)) < config.min_unique_ratio * len(words):
        return f"repetition: {len(set(words))} distinct of {len(words)} words"
    return None


def parsed_reason(text: str, parsed: ParsedText, config: TextFilterConfig) -> str | None:
    """Why a parsed text is unusable, or None."""
    if len(parsed.objects) > config.max_objects:
        return f"excessive_objects: {len(parsed.objects)} > {config.max_objects}"
    if parsed.complexity < config.min_complexity:
        return f"low_complexity: {parsed.complexity:.2f} < {config.min_complexity}"
    twice = listed_twice(text, parsed) if config.drop_listed_twice else None
    if twice is not None:
        return f"listed_twice: {twice!r} twice in a row"
    return None


def listed_twice(text: str, parsed: ParsedText) -> str | None:
    """The first noun phrase that the next one repeats word for word, joined to it as a list's
    items are (a comma, "and", "or"), or None."""
    for a, b in zip(parsed.phrases, parsed.phrases[1:]):
        if a.text.lower() == b.text.lower() and LIST_JOIN.fullmatch(text[a.end:b.start]):
            return a.text
    return None


def text_decision(texts: pa.Table, parser: PhraseParser, config: TextFilterConfig = TextFilterConfig()
                  ) -> tuple[Decision, dict[int, ParsedText]]:
    """The text filter's decision on a ``texts`` table, and the parse of every text that was parsed."""
    values = texts.column("text").to_pylist()
    reasons = [surface_reason(t, config, g) for t, g in zip(values, texts.column("granularity").to_pylist())]
    todo = [i for i, r in enumerate(reasons) if r is None]
    parsed = dict(zip(todo, parser.parse([values[i] for i in todo]))) if todo else {}
    for i, p in parsed.items():
        reasons[i] = parsed_reason(values[i], p, config)
    return Decision("text", reasons), parsed



def repeated_texts(texts: pa.Table, config: TextFilterConfig = TextFilterConfig()) -> Decision:
    """Descriptions repeated on most of a shard's described images (per granularity)."""
    granularities = texts.column("granularity").to_pylist()
    images = texts.column("image_id").to_pylist()
    words = [" ".join(w.lower() for w in WORD.findall(t or "")) for t in texts.column("text").to_pylist()]
    described: dict[str, set] = defaultdict(set)
    sharing: dict[tuple[str, str], set] = defaultdict(set)
    for granularity, image, key in zip(granularities, images, words):
        described[granularity].add(image)
        sharing[(granularity, key)].add(image)
    reasons = []
    for granularity, key in zip(granularities, words):
        n, of = len(sharing[(granularity, key)]), len(described[granularity])
        repeated = n >= config.repeat_min_images and n > config.max_repeat_share * of
        reasons.append(f"repeated_text: the same {granularity} description on {n} of {of} images" if repeated else None)
    return Decision("repeated_text", reasons)


def ocr_reason(text: str | None, config: TextFilterConfig) -> str | None:
    """Why an OCR string is not text: digits count (house numbers, prices), symbols do not."""
    if text is None or not text.strip():
        return "empty"
    visible = [c for c in text if not c.isspace()]
    readable = [c for c in visible if c.isalnum()]
    if len(readable) < config.min_letter_ratio * len(visible):
        return f"non_language: {len(readable)} letters or digits of {len(visible)} characters"
    letters = [c for c in readable if c.isalpha()]
    if sum(map(_latin, letters)) < config.min_latin_ratio * len(letters):
        return "not_english: mostly non-Latin letters"
    return None


def ocr_text(rows: pa.Table, config: TextFilterConfig = TextFilterConfig()) -> Decision:
    """OCR regions whose text is not language (symbols, stray glyphs from textures, other scripts)."""
    reasons = [ocr_reason(label, config) if kind == "ocr" else None
               for kind, label in zip(rows.column("kind").to_pylist(), rows.column("label").to_pylist())]
    return Decision("ocr_text", reasons)

"""Descriptions from a scene graph: brief, detailed and more detailed texts (lengths in FLD-5B's
ratio, about 8 : 30 : 70 tokens) with varied wording, and for each text its noun phrases with
character spans and the objects they refer to; plus a short caption per object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.world.scene import Scene, SceneObject, relation
from engine.world.vocab import NUMBER_WORDS, PATTERN_WORDS, plural


MORE_DETAILED_OBJECTS = 5
MORE_DETAILED_RELATIONS = 2
"""Caps that keep the three lengths near FLD-5B's 8 : 30 : 70 tokens."""


@dataclass(frozen=True)
class Phrase:
    start: int
    end: int
    text: str
    objects: tuple[int, ...]


@dataclass
class Description:
    granularity: str
    text: str
    phrases: list[Phrase]


@dataclass
class _Builder:
    """Appends words and records the span of each grounded phrase as it goes."""

    parts: list[str] = field(default_factory=list)
    phrases: list[Phrase] = field(default_factory=list)
    length: int = 0
    sentence_start: bool = True

    def add(self, text: str) -> _Builder:
        if self.sentence_start and text.strip():
            stripped = text.lstrip()
            text = text[: len(text) - len(stripped)] + stripped[0].upper() + stripped[1:]
            self.sentence_start = False
        self.parts.append(text)
        self.length += len(text)
        if text.rstrip().endswith("."):
            self.sentence_start = True
        return self

    def phrase(self, text: str, objects: tuple[int, ...]) -> _Builder:
        start = self.length
        self.add(text)
        self.phrases.append(Phrase(start, self.length, "".join(self.parts)[start:], objects))
        return self

    def build(self, granularity: str) -> Description:
        return Description(granularity, "".join(self.parts).strip(), self.phrases)


def article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def noun_phrase(obj: SceneObject, detail: int) -> str:
    """``a red house`` (detail 0), ``a large red striped house`` (1)."""
    words = [obj.colour]
    if detail >= 1:
        words = [obj.size, obj.colour] + ([PATTERN_WORDS[obj.pattern]] if PATTERN_WORDS[obj.pattern] else [])
    return article(" ".join(words + [obj.category]))


def region_caption(obj: SceneObject) -> str:
    caption = noun_phrase(obj, 1)
    return f"{caption} that says {obj.text}" if obj.text else caption


def _area(obj: SceneObject) -> int:
    return int(np.count_nonzero(obj.mask))


def _groups(scene: Scene) -> list[tuple[str, list[int]]]:
    """Objects grouped by category, largest group area first."""
    groups: dict[str, list[int]] = {}
    for i, obj in enumerate(scene.objects):
        groups.setdefault(obj.category, []).append(i)
    return sorted(groups.items(), key=lambda kv: -sum(_area(scene.objects[i]) for i in kv[1]))


def _group_phrase(scene: Scene, category: str, members: list[int]) -> str:
    if len(members) == 1:
        return noun_phrase(scene.objects[members[0]], 0)
    colours = {scene.objects[i].colour for i in members}
    colour = f"{colours.pop()} " if len(colours) == 1 else ""
    return f"{NUMBER_WORDS[len(members)] if len(members) < 10 else 'many'} {colour}{plural(category)}"


def _background(scene: Scene) -> str:
    kind = {"flat": "plain", "gradient": "gradient", "noise": "grainy", "stripes": "striped"}[scene.background]
    return f"{article(kind)} {scene.background_colour} background"


def brief(scene: Scene, rng: np.random.Generator) -> Description:
    b = _Builder()
    groups = _groups(scene)[:2]
    phrases = [(_group_phrase(scene, c, m), tuple(m)) for c, m in groups]
    style = int(rng.integers(3))
    if style == 0:
        b.add("a picture of ")
    b.phrase(*phrases[0])
    if len(phrases) > 1:
        b.add(" next to " if style == 1 else " and ")
        b.phrase(*phrases[1])
    if len(phrases) == 1:
        b.add(" on " + _background(scene))
    return b.add(".").build("brief")


def _where(position: str) -> str:
    """``top left`` -> ``at the top left``; ``left`` -> ``on the left``; ``centre`` -> ``in the centre``."""
    if position == "centre":
        return "in the centre"
    return f"on the {position}" if position in ("left", "right") else f"at the {position}"


def _describe_object(b: _Builder, scene: Scene, i: int, detail: int, rng: np.random.Generator) -> None:
    obj = scene.objects[i]
    where = _where(scene.position(i))
    style = int(rng.integers(3))
    if style == 0:
        b.add(f" {where} there is ").phrase(noun_phrase(obj, detail), (i,)).add(".")
    elif style == 1:
        b.add(" ").phrase(noun_phrase(obj, detail), (i,)).add(f" is {where} of the image.")
    else:
        b.add(" ").phrase(noun_phrase(obj, detail), (i,)).add(f" appears {where}.")
    if obj.text:
        b.add(f' The sign says "{obj.text}".')


def _relate(b: _Builder, scene: Scene, i: int, j: int) -> None:
    a, c = scene.objects[i], scene.objects[j]
    b.add(" ").phrase(f"the {a.colour} {a.category}", (i,)).add(f" is {relation(a.centre, c.centre)} ")
    b.phrase(f"the {c.colour} {c.category}", (j,)).add(".")


def detailed(scene: Scene, rng: np.random.Generator) -> Description:
    b = _Builder()
    n = len(scene.objects)
    opener = ["The image shows", "This picture contains", "In this image we can see"][int(rng.integers(3))]
    count = NUMBER_WORDS[n] if n < 10 else str(n)
    b.add(f"{opener} {count} object{'s' if n > 1 else ''} on {_background(scene)}.")
    order = sorted(range(n), key=lambda i: -_area(scene.objects[i]))[:2]
    for i in order:
        _describe_object(b, scene, i, 0, rng)
    return b.build("detailed")


def more_detailed(scene: Scene, rng: np.random.Generator) -> Description:
    b = _Builder()
    n = len(scene.objects)
    opener = ["The image shows", "This picture contains", "In this image we can see"][int(rng.integers(3))]
    b.add(f"{opener} {NUMBER_WORDS[n] if n < 10 else n} object{'s' if n > 1 else ''} drawn on {_background(scene)}.")
    order = sorted(range(n), key=lambda i: -_area(scene.objects[i]))[:MORE_DETAILED_OBJECTS]
    for i in order:
        _describe_object(b, scene, i, 1, rng)
    for i, j in list(zip(order[1:], order[:-1]))[:MORE_DETAILED_RELATIONS]:
        _relate(b, scene, i, j)
    return b.build("more_detailed")


def describe(scene: Scene, rng: np.random.Generator) -> list[Description]:
    return [brief(scene, rng), detailed(scene, rng), more_detailed(scene, rng)]

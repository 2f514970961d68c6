"""LabelMatchGrounder: a second opinion on text-phrase-region triplets. Each noun phrase of a
caption (spaCy) is linked to the detector regions of its image whose label's head word has the
phrase's head lemma; the triplet's score is the detector's confidence. A plural phrase takes
every match, a singular one the best: the highest-scored, or, when the phrase has a colour word
("the blue car" beside a red car), the one nearest that colour among those scored almost as high."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters.phrases import PhraseParser
from schemas.masks import decode_rle
from specialists.base import Batch, Resources, Specialist

COLOUR_WORDS = ("black", "white", "gray", "grey", "silver", "red", "maroon", "pink", "orange", "yellow", "gold",
                "beige", "tan", "brown", "olive", "green", "lime", "teal", "cyan", "turquoise", "blue", "navy",
                "purple", "violet", "magenta")
"""Basic colour terms a phrase may pick its box by; their RGB is matplotlib's CSS4 colour of that name."""


@dataclass(frozen=True)
class LabelGrounderConfig:
    kinds: tuple[str, ...] = ("object",)
    model: str | None = None
    """spaCy pipeline (default: the first English one installed)."""
    batch_size: int = 64
    by_colour: bool = True
    """Among several boxes of a singular phrase's label, pick by the phrase's colour word."""
    colour_min_score: float = 0.7
    """A box may win by colour only with at least this share of the best box's score: a weak box
    of the named colour is more often a false detection than the object a description names."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.colour_min_score <= 1.0:
            raise ValueError(f"colour_min_score must be within [0, 1], got {self.colour_min_score}")


class LabelMatchGrounder(Specialist):
    name = "label-grounder"
    role = "grounder"
    produces = ("triplets",)
    needs = ("texts", "regions")

    def __init__(self, config: LabelGrounderConfig = LabelGrounderConfig()):
        super().__init__(config.batch_size, Resources(cpus=1.0))
        self.config = config
        self.parser = PhraseParser(config.model)

    def load(self) -> None:
        from matplotlib.colors import CSS4_COLORS, to_rgb

        colour = f"+colour{self.config.colour_min_score}" if self.config.by_colour else ""
        self._version = f"spacy:{self.parser.version}{colour}"
        self._heads: dict[str, str] = {}
        self._colours = {w: np.array(to_rgb(CSS4_COLORS[w])) * 255 for w in COLOUR_WORDS}

    def head(self, label: str) -> str:
        """The lemma of a label's last word ("traffic lights" -> "light")."""
        if label not in self._heads:
            doc = self.parser.nlp(label.lower())
            words = [t for t in doc if t.is_alpha]
            self._heads[label] = words[-1].lemma_ if words else label.lower()
        return self._heads[label]

    def predict(self, batch: Batch) -> dict[str, pa.Table]:
        texts = batch.prompts("texts").to_pylist()
        regions = batch.prompts("regions")
        regions = regions.filter(pc.is_in(regions.column("kind"), pa.array(self.config.kinds, pa.string())))
        by_image: dict[str, list[dict]] = {}
        for r in regions.select(["image_id", "region_id", "box", "mask", "label", "score"]).to_pylist():
            if r["label"]:
                by_image.setdefault(r["image_id"], []).append({**r, "head": self.head(r["label"])})
        for candidates in by_image.values():
            candidates.sort(key=lambda r: -_score(r))  # best-scored first, for every phrase
        pixels = dict(zip(batch.image_ids, batch.images))
        docs = self.parser.nlp.pipe([t["text"] for t in texts], batch_size=self.batch_size)
        rows = []
        for text, doc in zip(texts, docs):
            candidates = by_image.get(text["image_id"], [])
            for p, chunk in enumerate(doc.noun_chunks):
                matches = [r for r in candidates if r["head"] == chunk.root.lemma_.lower()]
                if chunk.root.tag_ not in ("NNS", "NNPS"):
                    matches = self._pick(chunk, matches, pixels[text["image_id"]])
                for r in matches:
                    rows.append({"image_id": text["image_id"], "triplet_id": f"{text['text_id']}-lg{p}-{r['region_id']}",
                                 "text_id": text["text_id"], "text": text["text"], "phrase": chunk.text,
                                 "span_start": chunk.start_char, "span_end": chunk.end_char, "box": r["box"],
                                 "mask": r["mask"], "region_id": r["region_id"], "phrase_score": None,
                                 **self.provenance(batch.round, r["score"])})
        return {"triplets": self.table("triplets", rows)}

    def _pick(self, chunk, matches: list[dict], image: np.ndarray) -> list[dict]:
        """A singular phrase's box: of several (best-scored first), the one whose colour is nearest
        the phrase's first colour word, among those scored almost as high as the best; else the
        best-scored."""
        words = [t.text.lower() for t in chunk if t.i != chunk.root.i and t.text.lower() in self._colours]
        if not matches or not words or not self.config.by_colour:
            return matches[:1]
        matches = [r for r in matches if _score(r) >= self.config.colour_min_score * _score(matches[0])]
        if len(matches) < 2:
            return matches
        target = self._colours[words[0]]
        for r in matches:
            if "colour" not in r:  # once per region, however many phrases weigh it
                r["colour"] = region_colour(image, r["box"], r["mask"])
        distance = [float(np.linalg.norm(r["colour"] - target)) for r in matches]
        return [matches[int(np.argmin(distance))]]  # argmin keeps the first (best-scored) of equals


def _score(region: dict) -> float:
    return region["score"] if region["score"] is not None else 0.0


def region_colour(image: np.ndarray, box, mask: dict | None) -> np.ndarray:
    """A region's median RGB: over its mask when it has one of the image's size, else over the
    central half of its box (where an object fills its box, away from the background at its corners)."""
    on = decode_rle(mask) if mask is not None else None
    if on is not None and on.shape == image.shape[:2]:
        pixels = image[on]
    elif not np.all(np.isfinite(box)):
        return np.full(3, np.inf)
    else:
        h, w = image.shape[:2]
        x1, y1, x2, y2 = box
        dx, dy = (x2 - x1) / 4, (y2 - y1) / 4
        ys = slice(int(np.clip(y1 + dy, 0, h - 1)), int(np.clip(np.ceil(y2 - dy), 1, h)))
        xs = slice(int(np.clip(x1 + dx, 0, w - 1)), int(np.clip(np.ceil(x2 - dx), 1, w)))
        pixels = image[ys, xs].reshape(-1, image.shape[2])
    return np.median(pixels[:, :3], axis=0) if len(pixels) else np.full(3, np.inf)

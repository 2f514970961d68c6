"""LabelMatchGrounder: a second opinion on text-phrase-region triplets. Each noun phrase of a
caption (spaCy) is linked to the detector regions of its image whose label's head word has the
phrase's head lemma; the triplet's score is the detector's confidence. A plural phrase takes
every match, a singular one the best."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from filters.phrases import PhraseParser
from specialists.base import Batch, Resources, Specialist


@dataclass(frozen=True)
class LabelGrounderConfig:
    kinds: tuple[str, ...] = ("object",)
    model: str | None = None
    """spaCy pipeline (default: the first English one installed)."""
    batch_size: int = 64


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
        self._version = f"spacy:{self.parser.version}"
        self._heads: dict[str, str] = {}

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
        docs = self.parser.nlp.pipe([t["text"] for t in texts], batch_size=self.batch_size)
        rows = []
        for text, doc in zip(texts, docs):
            candidates = by_image.get(text["image_id"], [])
            for p, chunk in enumerate(doc.noun_chunks):
                matches = [r for r in candidates if r["head"] == chunk.root.lemma_.lower()]
                matches.sort(key=lambda r: -(r["score"] if r["score"] is not None else 0.0))
                if chunk.root.tag_ not in ("NNS", "NNPS"):
                    matches = matches[:1]
                for r in matches:
                    rows.append({"image_id": text["image_id"], "triplet_id": f"{text['text_id']}-lg{p}-{r['region_id']}",
                                 "text_id": text["text_id"], "text": text["text"], "phrase": chunk.text,
                                 "span_start": chunk.start_char, "span_end": chunk.end_char, "box": r["box"],
                                 "mask": r["mask"], "region_id": r["region_id"], "phrase_score": None,
                                 **self.provenance(batch.round, r["score"])})
        return {"triplets": self.table("triplets", rows)}

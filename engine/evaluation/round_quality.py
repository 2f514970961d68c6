"""A round's gold metrics: its kept rows on the gold images, and its grounders given the gold
descriptions (grounding recall@1 as the field measures a grounder), written to ``metrics``."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.compute as pc

from engine.dataset.store import Store
from engine.evaluation.evaluate import EvalConfig, Evaluator, metric_rows
from engine.evaluation.measure import gold_images, ground_gold_texts
from engine.round.config import RoundConfig
from specialists.base import WeightsError

log = logging.getLogger(__name__)


def round_config(dataset: Store, round_id: int) -> RoundConfig | None:
    """The config the round recorded when it ran (None for a round no specialist ran, e.g. a review)."""
    rows = dataset.read("rounds", round_id).to_pylist()
    if not rows:
        return None
    try:
        return RoundConfig.from_dict(json.loads(rows[-1]["config"]))
    except (TypeError, ValueError, json.JSONDecodeError) as err:
        log.info("round %d recorded no specialists' config (%s): its grounders are not measured", round_id, err)
        return None


def grounded_given_gold(dataset: Store, round_id: int, gold_truth: Store) -> pa.Table | None:
    """What round ``round_id``'s grounders keep given the gold descriptions and the round's own
    kept regions of the gold images; None when the round ran no grounder."""
    config = round_config(dataset, round_id)
    if config is None:
        return None
    regions = dataset.read("regions", round_id)
    regions = regions.filter(pc.is_in(regions.column("image_id"), pa.array(sorted(gold_images(gold_truth)), pa.string())))
    try:
        return ground_gold_texts(config, regions, gold_truth)
    except WeightsError as err:  # e.g. evaluated again where its models are not: the rest is still measured
        log.warning("round %d's grounders could not be loaded, so its grounding recall@1 is not measured: %s",
                    round_id, err)
        return None


def evaluate_round(dataset: Store, round_id: int, gold_truth: Store, source: str = "dataset",
                   config: EvalConfig = EvalConfig()) -> pa.Table:
    """Evaluate round ``round_id`` of ``dataset`` on the gold split and write its metrics."""
    predictions = {t: dataset.read(t, round_id) for t in ("texts", "regions", "triplets")}
    grounded = grounded_given_gold(dataset, round_id, gold_truth)
    if grounded is not None:
        predictions["grounded"] = grounded
    table = metric_rows(Evaluator(gold_truth, config).evaluate(predictions), round_id, source)
    with dataset.writer(round_id) as writer:
        writer.write("metrics", f"gold-{source}", table)
    return table

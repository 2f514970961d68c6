"""``fld review``: people in the loop. ``queue`` ranks a round's images by how much its own
evidence disagrees and writes the top K as Label Studio tasks; ``import`` brings the reviewed
tasks back as human rows that win over every specialist."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import USER_ERRORS, DataOption, JsonOption, fail
from cli.render import print_json, print_table
from engine.dataset.store import Store


def review_queue(
    data: DataOption = Path("fld-data"),
    round_id: Annotated[int | None, typer.Option("--round", "-r", help="The round to rank (default: the latest "
                                                 "completed annotation round).")] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="How many images go to Label Studio.")] = 25,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for tasks.json, label_config.xml and queue.jsonl.")]
    = Path("review"),
    local_files_root: Annotated[Path | None, typer.Option(
        help="Serve images through Label Studio's local files (start it with "
             "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=this folder); default: each image's uri as it is.")] = None,
    random_seed: Annotated[int | None, typer.Option("--random", help="Random order with this seed instead of the "
                                                    "ranking (the baseline the ranking must beat).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Rank a round's pool images by disagreement (boxes near their floor, labels that clash,
    fused members that disagree, descriptions naming objects no box found, Florence-2 against the
    specialists) and write the top K as a Label Studio import file with the round's rows as
    pre-annotations, with the labeling config to create the project from."""
    from engine.review.handoff import write_queue
    from engine.review.queue import build_queue, random_queue

    try:
        store = Store(data)
        round_id = round_id if round_id is not None else _latest(store)
        entries = random_queue(store, random_seed) if random_seed is not None else build_queue(store, round_id)
        if not entries:
            raise ValueError(f"round {round_id} of {store.root} has no pool image left to review")
        files = write_queue(store, round_id, entries, k, out, local_files_root)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        print_json({"round": round_id, "tasks": str(files.tasks), "label_config": str(files.config),
                    "ranking": str(files.ranking), "queue": [e.to_dict() for e in entries[:k]]})
        return
    print_table(["rank", "image", "score", "why"], [(e.rank, e.image_id, round(e.score, 3), e.why) for e in entries[:k]],
                title=f"review queue of round {round_id}: top {files.images} of {len(entries)} images "
                      f"-> {files.tasks} (labeling config {files.config})")


def _latest(store: Store) -> int:
    from engine.review.queue import latest_annotation_round

    found = latest_annotation_round(store)
    if found is None:
        raise ValueError(f"{store.root} has no completed annotation round to review: run one first (`fld run`)")
    return found


def review_import(
    export: Annotated[Path, typer.Argument(help="Label Studio's JSON export of the reviewed tasks.")],
    data: DataOption = Path("fld-data"),
    round_id: Annotated[int | None, typer.Option("--round", "-r", help="The round whose queue was reviewed "
                                                 "(default: the latest annotation round; the export must say the same).")]
    = None,
    allow_label: Annotated[list[str] | None, typer.Option(help="A category the reviewers added that no round has "
                                                          "found yet; repeatable.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Import reviewed tasks as human rows (score_source human, who and when in the reviews table)
    into a review round on top of the latest round: they replace the machines' rows of those
    images now and in every later round, and the next refinement trains on them. Importing the
    same export again adds nothing."""
    from engine.review.importer import import_export

    try:
        result = import_export(Store(data), export, round_id, tuple(allow_label or ()))
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        print_json(result.to_dict())
        return
    body = result.to_dict()
    print_table(["field", "value"], [(k, v) for k, v in body.items()],
                title=f"{export.name} -> review round {result.round}"
                      + (" (nothing new: already imported)" if not result.new else ""))

"""The ``fld`` command line: the app, its groups and the order commands are listed in; the
commands live in ``cli/`` by what they work on."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from cli import dataset, loop, outputs, review, world, zoo
from engine import reaper, settings

app = typer.Typer(
    name="fld",
    help=(
        "fld-engine: build FLD-5B-style annotations (descriptions, region-text pairs, "
        "text-phrase-region triplets) for a folder of images, round after round.\n\n"
        "Datasets are folders of Parquet files; every command takes --data (or FLD_DATA)."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

world_app = typer.Typer(help="The synthetic world: images with known ground truth (the embedded default).",
                        no_args_is_help=True)
zoo_app = typer.Typer(help="The model zoo: round-0 models trained long, with their cards.", no_args_is_help=True)
review_app = typer.Typer(help="People in the loop: a review queue ranked by disagreement, Label Studio round trip.",
                         no_args_is_help=True)
round_app = typer.Typer(help="Annotation rounds: run (or resume) one.", no_args_is_help=True)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens (INFO).")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings.apply()  # offline, and each library's files under FLD_HOME (before Ray, Prefect, YOLO start)
    reaper.watch()  # whatever ends this process ends the servers and workers it starts


app.command()(dataset.query)
app.command()(dataset.stats)
app.command()(dataset.verify)
app.add_typer(world_app, name="world")
world_app.command("make")(world.world_make)
app.command("ingest")(dataset.ingest_command)
app.command()(dataset.evaluate)
app.command()(dataset.metrics)
app.command()(dataset.explain)
app.command()(dataset.diff)
app.add_typer(round_app, name="round")
round_app.command("run")(loop.round_run)
app.command()(loop.bootstrap)
app.command()(loop.oracle)
app.add_typer(zoo_app, name="zoo")
zoo_app.command("build")(zoo.zoo_build)
zoo_app.command("check")(zoo.zoo_check)
app.command("run")(loop.run_command)
app.command("refine")(loop.refine_command)
app.add_typer(review_app, name="review")
review_app.command("queue")(review.review_queue)
review_app.command("import")(review.review_import)
app.command()(outputs.report)
app.command()(outputs.export)
app.command()(dataset.rounds)
app.command()(loop.schedule)

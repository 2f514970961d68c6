"""``fld zoo``: the round-0 models ``fld run`` starts from, built and checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import USER_ERRORS, JsonOption, fail
from cli.render import err_console, print_json, print_table
from engine.loop.zoo import DEFAULT_ZOO

ZooOption = Annotated[Path, typer.Option("--zoo", help="The zoo folder (default: zoo/ of this code).")]


def _rows(cards) -> list[tuple]:
    rows = []
    for name, card in cards.items():
        for split, metrics in card.gold.items():
            for metric, m in sorted(metrics.items()):
                rows.append((name, split, metric, m.get("value"), m.get("low"), m.get("high"), card.training.get("seconds"),
                             card.training["machine"]["device"]))
    return rows


HEADERS = ["model", "split", "metric", "value", "95% low", "95% high", "train s", "device"]


def zoo_build(
    only: Annotated[list[str] | None, typer.Option(help="Build only these (yolo, sam, florence2); repeatable.")] = None,
    zoo: ZooOption = DEFAULT_ZOO,
    work: Annotated[Path, typer.Option(help="Where the zoo world and the trainings' checkpoints live "
                                       "(an interrupted build resumes from them).")] = Path("zoo-build"),
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    steps: Annotated[int | None, typer.Option(help="Training steps instead of the zoo profile's (Florence-2, "
                                              "SAM); the card's command names them.")] = None,
    train_only: Annotated[bool, typer.Option("--train-only", help="Train and stop: no measuring or publishing "
                                             "(on a machine with torch and transformers only). The same "
                                             "command without it, where the whole engine is installed, "
                                             "measures and publishes what WORK holds.")] = False,
    fine_tune: Annotated[bool, typer.Option("--fine-tune", help="Fine-tune the published models with the zoo "
                                            "profile's next fine-tuning stage (Florence-2: region captions on "
                                            "crops, then boxes on cropped images) and publish them in their "
                                            "place; each card keeps the models it started from as stages.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Train the zoo's models with the zoo profile (a long budget: hours on 2 CPU cores, minutes
    on a GPU) on their own world, a sample of the seed domain every profile's world shares, and
    publish each with its card (command, code commit, world, wall time, machine, gold metrics,
    file hashes)."""
    from engine.loop.zoo import build, fine_tune as fine_tune_zoo

    if fine_tune and (steps is not None or train_only):
        raise fail("--fine-tune takes its budget from the zoo profile: leave out --steps and --train-only")
    step = lambda what: err_console().print(f"[bold]{what}[/bold] ...")  # noqa: E731
    try:
        if fine_tune:
            cards = fine_tune_zoo(work, zoo, tuple(only or ()), device, step=step)
        else:
            cards = build(work, zoo, tuple(only or ()), device, step=step, steps=steps, train_only=train_only)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if train_only:
        err_console().print(f"trained into {work / 'models'}; measure and publish with the same command "
                            "without --train-only")
        return
    if as_json:
        print_json({name: card.to_dict() for name, card in cards.items()})
        return
    print_table(HEADERS, _rows(cards), title=f"zoo models published in {zoo}")


def zoo_check(
    zoo: ZooOption = DEFAULT_ZOO,
    world: Annotated[Path | None, typer.Option("--world", "-w", help="Check against this world (default: the "
                                               "default profile's).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Check every card of the zoo (world, trainer version, file hashes, loadable weights) and show
    what each model scored where it was trained."""
    from engine.loop.profiles import profile
    from engine.loop.zoo import check
    from engine.world.make import World

    try:
        config = World.open(world).config if world else profile("default").world()
        models = check(zoo, config)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    cards = {name: model.card for name, model in models.items()}
    if as_json:
        print_json({name: card.to_dict() for name, card in cards.items()})
        return
    print_table(HEADERS, _rows(cards), title=f"zoo {zoo}: {len(cards)} model(s), cards and files checked")

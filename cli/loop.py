"""``fld`` commands that run the engine: a round, the bootstrap, the whole job, schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import USER_ERRORS, DataOption, JsonOption, fail, round_progress
from cli.dataset import print_metrics
from cli.render import err_console, print_json, print_table
from engine.dataset.metrics import metric_rows
from engine.dataset.store import Store
from engine.round.config import RoundConfig


def round_run(
    config: Annotated[Path, typer.Option("--config", "-c", help="Round config (TOML or JSON): specialists, filters, shard size.")],
    data: DataOption = Path("fld-data"),
    round_id: Annotated[int, typer.Option("--round", "-r", help="Round number (>= 1).")] = 1,
    gold: Annotated[Path | None, typer.Option(help="Gold truth to evaluate the round on (a world's gold folder).")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", envvar="RAY_ADDRESS",
                                                    help="An existing Ray cluster; default: Ray on this machine.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Annotate the dataset's pool and gold images: a Prefect flow running specialists on Ray,
    then filters, Parquet, and (with --gold) evaluation.

    Rerunning an interrupted round skips the shards it finished. PREFECT_API_URL points the flow
    at a Prefect server; without it Prefect's ephemeral API is used.
    """
    from flows.engine import annotation_round

    try:
        RoundConfig.from_file(config)  # a bad config is reported before Prefect and Ray start
        Store(data)
        with round_progress(f"round {round_id}"):
            result = annotation_round(str(data), str(config), round_id, gold=str(gold) if gold else None,
                                      ray_address=ray_address)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        print_json(result.to_dict())
        return
    summary = result.summary
    rows = [("images", summary.images), ("skipped shards", summary.skipped), ("images/s", round(summary.images_per_second, 3)),
            ("failures", summary.failures)]
    rows += [(f"{t} raw -> kept", f"{summary.raw.get(t, 0):,} -> {summary.kept.get(t, 0):,}")
             for t in ("texts", "regions", "triplets")]
    print_table([f"round {round_id}", "value"], rows, title="round summary")
    dropped = [(name, code, n) for name, counts in summary.filter_counts.items() for code, n in counts.items()
               if code not in ("kept", "fused") and n]
    if dropped:
        print_table(["filter", "reason", "rows"], dropped, title="what the filters dropped (see the rejected table)")
    floors = [(key, ", ".join(f"{k}={v}" for k, v in summary.floors.get(key, {}).items()) or "none", reason, n)
              for key in sorted(set(summary.floors) | set(summary.floored))
              for reason, n in (summary.floored.get(key) or {"-": 0}).items()]
    if floors:
        print_table(["specialist", "its model's floors", "removed by them", "outputs"], floors,
                    title="before the filters: what each model's own floors removed (never rows)")
    if result.metrics:
        print_table(["metric", "value"], [(k, v) for k, v in result.metrics.items() if v is not None],
                    title=f"round {round_id} on gold")


def print_models(result, title: str, as_json: bool) -> None:
    """Trained models' gold metrics (with intervals) and seed-gold figures, as a table or JSON."""
    rows = result.gold_table()
    if as_json:
        print_json({"models": {n: str(t.folder) for n, t in result.models.items()}, "gold": rows})
        return
    print_table(["specialist", "gold metric", "value", "95% low", "95% high", "seed-gold"],
                [(r["specialist"], r["metric"], r["value"], r["low"], r["high"], r["seed_gold"]) for r in rows],
                title=title)


def bootstrap(
    world: Annotated[Path, typer.Option("--world", "-w", help="A world made by `fld world make`.")],
    models: Annotated[Path, typer.Option("--models", "-m", help="Folder for the trained models.")] = Path("fld-data/models"),
    profile: Annotated[str, typer.Option(help="Training budget: quick, default or large.")] = "default",
    only: Annotated[list[str] | None, typer.Option(help="Train only these (yolo, sam, grabcut, florence2); repeatable.")] = None,
    pretrained_florence2: Annotated[Path | None, typer.Option("--pretrained-florence2",
                                    help="Start Florence-2 from this checkpoint folder (e.g. Florence-2-base).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    as_json: JsonOption = False,
) -> None:
    """Train the embedded default's specialists on a world's seed split, offline, and measure each
    on its gold split. A rerun with unchanged inputs reuses the trained models."""
    from engine.loop.bootstrap import bootstrap as run_bootstrap
    from engine.loop.profiles import profile as get_profile
    from engine.world.make import World
    from specialists.training.registry import TRAINERS

    try:
        chosen = get_profile(profile).on(device)
        if pretrained_florence2:
            chosen = chosen.pretrained("florence2", str(pretrained_florence2))
        result = run_bootstrap(World.open(world), models, chosen, tuple(only or TRAINERS),
                               step=lambda what: err_console().print(f"[bold]{what}[/bold] ..."))
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    print_models(result, f"bootstrapped specialists in {models} (gold: target domain; seed-gold: where they trained)",
                 as_json)


def oracle(
    world: Annotated[Path, typer.Option("--world", "-w", help="A world made by `fld world make` (its pool truth is used).")],
    models: Annotated[Path, typer.Option("--models", "-m", help="Folder for the trained models (oracle/ inside).")] = Path("fld-data/models"),
    profile: Annotated[str, typer.Option(help="Training budget: the same as the bootstrap's (quick, default, large).")] = "default",
    only: Annotated[list[str] | None, typer.Option(help="Train only these (yolo, sam, grabcut, florence2); repeatable.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    as_json: JsonOption = False,
) -> None:
    """The ceiling of each family: the bootstrap's models and budget, trained on the seed and the
    target domain's pool truth (never gold) and measured on the same gold. Only a synthetic world has
    pool truth; compare its figures with `fld metrics` to see how much of the gap a round closed."""
    from engine.loop.bootstrap import oracle as run_oracle
    from engine.loop.profiles import profile as get_profile
    from engine.world.make import World
    from specialists.training.registry import TRAINERS

    try:
        result = run_oracle(World.open(world), models, get_profile(profile).on(device), tuple(only or TRAINERS),
                            step=lambda what: err_console().print(f"[bold]{what}[/bold] ..."))
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    print_models(result, f"oracle specialists (trained on seed and pool truth) in {models}/oracle", as_json)


def run_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the world, dataset and models.")] = Path("fld-data"),
    profile: Annotated[str, typer.Option(help="quick (a few minutes), default (< 15 min on 2 CPU cores) or large.")] = "default",
    rounds: Annotated[int | None, typer.Option(help="Rounds in all (default: 1 + the profile's refinement rounds).")] = None,
    pretrained_florence2: Annotated[Path | None, typer.Option("--pretrained-florence2",
                                    help="Start Florence-2 from this checkpoint folder instead of from nothing.")] = None,
    zoo: Annotated[Path | None, typer.Option(help="Start from this model zoo's round-0 models (default: zoo/ of "
                                             "this code, when there is one).")] = None,
    no_zoo: Annotated[bool, typer.Option("--no-zoo", help="Train round 0 from nothing with the profile's budget.")] = False,
    world_seed: Annotated[int | None, typer.Option("--world-seed", help="Draw another sample of the profile's world.")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", envvar="RAY_ADDRESS",
                                                    help="An existing Ray cluster; default: Ray on this machine.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The main job: make a synthetic world, ingest it, take round 0's models from the zoo (a
    model it lacks is trained on the world's seed split), run the specialists' round and
    refinement rounds (Prefect flows on Ray), and print the per-round gold metrics. Rerunning
    reuses what is done (world, models, finished shards)."""
    from engine.loop.profiles import profile as get_profile
    from engine.loop.zoo import DEFAULT_ZOO, check
    from flows.engine import engine_run

    if zoo is not None and no_zoo:
        raise fail("give --zoo or --no-zoo, not both", 2)
    try:
        chosen = get_profile(profile)
        if zoo is None and not no_zoo and DEFAULT_ZOO.is_dir():
            zoo = DEFAULT_ZOO
        if zoo is not None:
            check(zoo.absolute(), chosen.world(world_seed))  # a bad zoo is refused before Prefect and Ray start
        with round_progress("images annotated (this round)"):
            result = engine_run(str(out.absolute()), profile, ray_address,
                                str(pretrained_florence2) if pretrained_florence2 else None, rounds, world_seed,
                                str(zoo.absolute()) if zoo is not None else None)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    if as_json:
        print_json(result.to_dict())
        return
    print_metrics(metric_rows(Store(result.data)), None, f"{out}: per-round metrics")


def refine_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="A `fld run` folder (world, dataset, models).")] = Path("fld-data"),
    rounds: Annotated[int, typer.Option(help="Refinement rounds to run now.")] = 1,
    profile: Annotated[str, typer.Option(help="The profile the run was made with (its refinement budget).")] = "default",
    ray_address: Annotated[str | None, typer.Option("--ray-address", envvar="RAY_ADDRESS",
                                                    help="An existing Ray cluster; default: Ray on this machine.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Go on from a `fld run` folder's latest round (after `fld review import`, say): retrain
    every specialist on it, gate, relabel, evaluate; resumes a round that did not complete."""
    from flows.engine import data_engine

    data, models, world = out / "dataset", out / "models", out / "world"
    missing = [str(p) for p in (data, models, world) if not p.is_dir()]
    if missing:
        raise fail(f"{out} is not a `fld run` folder: {', '.join(missing)} missing", 2)
    try:
        with round_progress("images annotated (this round)"):
            data_engine(str(data.absolute()), str((world / "gold").absolute()), rounds=rounds,
                        ray_address=ray_address, models=str(models.absolute()), world=str(world.absolute()),
                        profile=profile, min_gain=0.0)
    except USER_ERRORS as err:
        raise fail(str(err)) from None
    found = metric_rows(Store(data))
    if as_json:
        print_json([r.to_dict() for r in found])
        return
    print_metrics(found, None, f"{out}: per-round metrics")


def schedule(
    gold: Annotated[Path, typer.Option(help="Gold truth the data engine measures each round on.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Round config (TOML or JSON): the same "
                                                "specialists every round.")] = None,
    models: Annotated[Path | None, typer.Option("--models", "-m", help="Or: bootstrapped models (`fld bootstrap`); "
                                                "rounds after the first retrain, gate and relabel.")] = None,
    world: Annotated[Path | None, typer.Option("--world", "-w", help="With --models: the world they were trained on.")] = None,
    data: DataOption = Path("fld-data"),
    cron: Annotated[str | None, typer.Option(help='Cron schedule, e.g. "0 2 * * *" (02:00 daily).')] = None,
    interval: Annotated[int | None, typer.Option(help="Or: seconds between runs.")] = None,
    name: Annotated[str, typer.Option(help="Deployment name.")] = "fld-data-engine",
    rounds: Annotated[int, typer.Option(help="Rounds per run (the engine stops early when gold stops improving).")] = 3,
    work_pool: Annotated[str | None, typer.Option("--work-pool", help="Register with a Prefect process work pool "
                                                  "(run `prefect worker start --pool NAME`) instead of serving here.")] = None,
) -> None:
    """Schedule the data engine as a Prefect deployment (cron or interval). Each run goes on from
    the dataset: it resumes the latest round if that did not complete, else starts the next.

    Without --work-pool, this command serves the deployment itself until stopped (Ctrl-C).
    Point PREFECT_API_URL at a Prefect server so the schedule outlives this process.
    """
    from flows import schedule as scheduling

    if (cron is None) == (interval is None):
        raise fail("give exactly one of --cron or --interval", 2)
    if (config is None) == (models is None) or (models is None) != (world is None):
        raise fail("give --config, or --models with --world", 2)
    try:
        parameters = {"data": str(data.absolute()), "gold": str(gold.absolute()), "rounds": rounds}
        if config is not None:
            RoundConfig.from_file(config)
            parameters["config"] = str(config.absolute())
        else:
            parameters.update(models=str(models.absolute()), world=str(world.absolute()))
        if work_pool:
            deployment_id = scheduling.register(name, work_pool, parameters, cron, interval)
            err_console().print(f"deployment data-engine/{name} registered ({deployment_id}); "
                                f"start a worker: prefect worker start --pool {work_pool}")
            return
        err_console().print(f"serving data-engine/{name} ({'cron ' + cron if cron else f'every {interval} s'}); Ctrl-C stops")
        scheduling.serve(name, parameters, cron, interval)
    except USER_ERRORS as err:
        raise fail(str(err)) from None

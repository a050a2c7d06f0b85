"""`lockstep sim`: the queue simulator (spec/queue.md §7) and its `--check`.

Every combination of the given modes, failure probabilities and runner counts is one row; each
row's serial baseline is simulated too. The simulator is imported inside the command, so that
`lockstep --help` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from lockstep.cli.common import JsonOpt, info
from lockstep.errors import EXIT_FAILURE, UsageError

if TYPE_CHECKING:
    from lockstep.sim.params import SimParams


_N = TypeVar("_N", int, float)


def _numbers(text: str, option: str, kind: Callable[[str], _N], example: str) -> list[_N]:
    """A comma-separated list of numbers of one kind (float or int)."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        what = "an integer" if kind is int else "a number"
        raise UsageError(f"{option} {text!r} is not {what} or a comma-separated list of "
                         f"{what.split()[1]}s", f"e.g. {option} {example}")
    return values


def _floats(text: str, option: str) -> list[float]:
    """A comma-separated list of numbers."""
    return _numbers(text, option, float, "0.02,0.1")


def _ints(text: str, option: str) -> list[int]:
    """A comma-separated list of integers."""
    return _numbers(text, option, int, "1,4,8")


def _pools(given: list[str]) -> tuple[tuple[str, int], ...]:
    """`NAME=N` pairs."""
    out = []
    for text in given:
        name, _, size = text.partition("=")
        if not name or not size.isdigit() or int(size) < 1:
            raise UsageError(f"bad pool {text!r}", "use --pool NAME=N with N >= 1")
        out.append((name, int(size)))
    return tuple(out)


def _window(text: str) -> tuple[Any, int | None]:
    """`runners`, `aimd` or a fixed depth N."""
    from lockstep.queue.pipeline import WindowKind

    if text in ("runners", "aimd"):
        return WindowKind(text), None
    if text.isdigit() and int(text) >= 1:
        return WindowKind.FIXED, int(text)
    raise UsageError(f"bad window {text!r}", "use runners, aimd or a number N >= 1")


def _rows(options: dict[str, Any]) -> list[SimParams]:
    """One parameter set per (mode, p, runners)."""
    from lockstep.queue.pipeline import Mode
    from lockstep.sim.params import SimParams, SimStage

    modes = []
    for name in options["mode"].split(","):
        if name not in {m.value for m in Mode}:
            raise UsageError(f"unknown mode {name!r}", "use serial, speculative or batch, or a "
                                                      "comma-separated list of them")
        modes.append(Mode(name))
    window, fixed = _window(options["window"])
    ways = options["bisect_ways"]
    if ways != "auto" and not (ways.isdigit() and int(ways) >= 2):
        raise UsageError(f"bad --bisect-ways {ways!r}", "use auto or a number N >= 2")
    stages = tuple(SimStage.parse(s) for s in options["stage"] or ["test=fixed:600"])
    rows = []
    for p in _floats(options["p"], "--p"):
        for runners in _ints(options["runners"], "--runners"):
            for mode in modes:
                params = SimParams(
                    n=options["n"], p=p, stages=stages, configs=options["configs"],
                    runners=runners, pools=_pools(options["pool"] or []), mode=mode,
                    window=window, window_fixed=fixed, window_start=options["window_start"],
                    window_floor=options["window_floor"], window_max=options["window_max"],
                    batch_size=options["batch_size"], batch_max_wait=options["batch_max_wait"],
                    bisect_ways=None if ways == "auto" else int(ways),
                    flake_retries=options["flake_retries"], flake=options["flake"],
                    infra=options["infra"], retries=options["retries"],
                    arrivals=options["arrivals"], landing_s=options["landing_s"],
                    reps=options["reps"], seed=options["seed"])
                params.validate()
                rows.append(params)
    return rows


def sim(
    n: Annotated[int, typer.Option("--n", help="Items per repetition.")] = 200,
    p: Annotated[str, typer.Option("--p", help="Failure probability of an item (comma list: a "
                                              "row each).")] = "0.1",
    stage: Annotated[list[str] | None, typer.Option(
        "--stage", help="NAME=DURATION, optionally followed by @POOL and by ~P (its own "
                        "failure probability); repeatable, in order. DURATION is fixed:S, "
                        "uniform:MIN:MAX or lognormal:MEDIAN:SIGMA (seconds). Default: "
                        "test=fixed:600.", show_default=False)] = None,
    configs: Annotated[int, typer.Option("--configs", help="Configurations C.")] = 1,
    runners: Annotated[str, typer.Option("--runners", help="Runners P (comma list: a row "
                                                          "each).")] = "8",
    pool: Annotated[list[str] | None, typer.Option(
        "--pool", help="NAME=N: a pool capping its stages' concurrent runs (repeatable).",
        show_default=False)] = None,
    mode: Annotated[str, typer.Option("--mode", help="serial, speculative, batch (comma "
                                                    "list).")] = "serial,speculative,batch",
    window: Annotated[str, typer.Option("--window", help="runners, aimd, or a fixed depth "
                                                        "N.")] = "runners",
    window_start: Annotated[int | None, typer.Option(
        "--window-start", help="aimd: initial W (default: P).", show_default=False)] = None,
    window_floor: Annotated[int, typer.Option("--window-floor", help="aimd: lowest W.")] = 3,
    window_max: Annotated[int | None, typer.Option(
        "--window-max", help="aimd: highest W (default: 4·P).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch mode: items per "
                                                                "batch.")] = 8,
    batch_max_wait: Annotated[float, typer.Option(
        "--batch-max-wait", help="Batch mode: seconds a partial batch waits.")] = 60.0,
    bisect_ways: Annotated[str, typer.Option(
        "--bisect-ways", help="Parts a failed batch splits into: N >= 2, or auto (the "
                              "larger of 2 and P).")] = "auto",
    flake_retries: Annotated[int, typer.Option("--flake-retries", help="Reruns of a failed "
                                                                      "run.")] = 0,
    flake: Annotated[float, typer.Option("--flake", help="Probability a run flakes.")] = 0.0,
    infra: Annotated[float, typer.Option("--infra", help="Probability a run exits 75.")] = 0.0,
    retries: Annotated[int, typer.Option("--retries", help="Infrastructure retries.")] = 2,
    arrivals: Annotated[str, typer.Option(
        "--arrivals", help="all-at-0 or poisson:RATE (items per hour).")] = "all-at-0",
    landing_s: Annotated[float, typer.Option("--landing-s", help="Seconds per landing.")] = 0.0,
    reps: Annotated[int, typer.Option("--reps", help="Repetitions per row.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random stream.")] = 1,
    as_json: JsonOpt = False,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the JSON here.",
                                             show_default=False)] = None,
    check: Annotated[bool, typer.Option(
        "--check", help="Run the §7 check (one fixed stage, N >= 200, >= 200 repetitions; only "
                        "--n, --reps and --seed apply) and exit 1 if any statement fails.")
    ] = False,
) -> None:
    """Simulate the integration queue on a virtual clock with the real scheduler."""
    if check:
        _check(n, reps, seed)
        return
    import time

    from lockstep.sim import run_grid
    from lockstep.sim.report import document, dumps, table

    options = dict(locals())
    rows = _rows(options)
    started = time.perf_counter()
    results, serials = run_grid(rows, timed=True, progress=lambda r: info(
        f"simulating {r.mode} p={r.p:g} P={r.runners} ({r.reps} repetitions)"))
    params = {k: v for k, v in rows[0].to_json().items() if k not in ("mode", "p", "runners")}
    doc = document(results, [serials[r.params] for r in results], params,
                   time.perf_counter() - started)
    if out is not None:
        try:
            out.write_text(dumps(doc), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror}",
                             "give a writable --out path") from exc
    if as_json:
        sys.stdout.write(dumps(doc))
    else:
        sys.stdout.write(table(doc) + "\n")


def _check(n: int, reps: int, seed: int) -> None:
    """`--check`: print each statement; exit 1 when one fails."""
    if n < 200 or reps < 200:
        raise UsageError("--check needs --n 200 or more and --reps 200 or more",
                         "drop --n and --reps, or raise them")
    if not 0 <= seed < 2 ** 63:
        raise UsageError("--seed must be from 0 to 2^63-1", "e.g. --seed 1")
    from lockstep.sim.check import run_check

    findings = run_check(n, reps, seed, progress=lambda r: info(
        f"simulating {r.mode} p={r.p:g} P={r.runners} ({r.reps} repetitions)"))
    for finding in findings:
        sys.stdout.write(("ok    " if finding.ok else "FAIL  ") + finding.text + "\n")
    failed = sum(not f.ok for f in findings)
    sys.stdout.write(f"{len(findings) - failed}/{len(findings)} statements hold\n")
    if failed:
        raise typer.Exit(EXIT_FAILURE)

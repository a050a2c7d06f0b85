"""Benchmark: how long `lockstep` commands take to start, beside bare Python in the same run.

It builds the sample system with `lockstep demo` in a temporary directory (three component
repos, an integration repo with tagged integration releases), then times real processes,
round-robin so that a busy moment hits every command alike (one untimed warm-up round first):

    python -c pass                       the interpreter alone (the floor)
    python -c "import typer"             the CLI framework alone
    python -c "import sqlalchemy"        the store's engine alone (what the CLI must not load)
    lockstep --help | --version | manifest show | manifest diff A B | queue status

Each figure is the median wall time of N runs (fork to exit, stdout and stderr to a pipe),
with its ratio to `python -c pass` and to `import typer`.

    .venv/bin/python bench/cli_startup.py [--runs 15] [--out bench/results/cli_startup.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import source_info, write_result

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "cli_startup.json"


def lockstep_argv() -> list[str]:
    """The installed `lockstep` console script beside this interpreter, else `python -m`."""
    script = Path(sys.executable).with_name("lockstep")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lockstep"]


def isolated_env(work: Path) -> dict[str, str]:
    """The environment of every timed process: git isolated in work, no crash switches."""
    cfg = work / "gitconfig"
    cfg.write_text("[user]\n\tname = lockstep bench\n\temail = bench@localhost\n"
                   "[init]\n\tdefaultBranch = main\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GIT_", "LOCKSTEP_")) and k != "PYTHONPROFILEIMPORTTIME"}
    env.update(GIT_CONFIG_GLOBAL=str(cfg), GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    return env


def build_sample(work: Path, env: dict[str, str]) -> tuple[Path, str, str]:
    """`lockstep demo` in work; returns the integration repo and its first and last release."""
    demo = subprocess.run([*lockstep_argv(), "demo", str(work / "demo")], env=env,
                          capture_output=True, text=True, check=False)
    if demo.returncode != 0:
        raise SystemExit(f"lockstep demo failed:\n{demo.stdout}\n{demo.stderr}")
    repo = work / "demo" / "integration"
    tags = subprocess.run(["git", "tag", "--list", "--sort=creatordate"], cwd=repo, env=env,
                          capture_output=True, text=True, check=True).stdout.split()
    if len(tags) < 2:
        raise SystemExit(f"the demo tagged {len(tags)} releases; manifest diff needs two")
    return repo, tags[0], tags[-1]


def commands(first: str, last: str) -> dict[str, list[str]]:
    """Label → argv, the references first."""
    py, ls = [sys.executable], lockstep_argv()
    return {
        "python -c pass": [*py, "-c", "pass"],
        "python -c 'import typer'": [*py, "-c", "import typer"],
        "python -c 'import sqlalchemy'": [*py, "-c", "import sqlalchemy"],
        "lockstep --help": [*ls, "--help"],
        "lockstep --version": [*ls, "--version"],
        "lockstep manifest show": [*ls, "manifest", "show"],
        f"lockstep manifest diff {first} {last}": [*ls, "manifest", "diff", first, last],
        "lockstep queue status": [*ls, "queue", "status"],
    }


def time_once(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall seconds of one run; the command must succeed."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True,
                          stdin=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace')}")
    return elapsed


def loads_sqlalchemy(argv: list[str], cwd: Path, env: dict[str, str]) -> bool:
    """Whether the command imports sqlalchemy (one extra run with PYTHONPROFILEIMPORTTIME)."""
    proc = subprocess.run(argv, cwd=cwd, env=dict(env, PYTHONPROFILEIMPORTTIME="1"),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    return any(line.startswith("import time:") and line.rsplit("|", 1)[-1].strip()
               .split(".")[0] == "sqlalchemy" for line in proc.stderr.splitlines())


def measure(cmds: dict[str, list[str]], cwd: Path, env: dict[str, str],
            runs: int) -> dict[str, list[float]]:
    """Round-robin runs of every command, after one untimed warm-up round."""
    for argv in cmds.values():
        time_once(argv, cwd, env)
    times: dict[str, list[float]] = {label: [] for label in cmds}
    for _ in range(runs):
        for label, argv in cmds.items():
            times[label].append(time_once(argv, cwd, env))
    return times


def summarise(times: dict[str, list[float]], cmds: dict[str, list[str]],
              sqlalchemy: dict[str, bool], runs: int) -> dict[str, Any]:
    """The JSON document."""
    base = statistics.median(times["python -c pass"])
    typer_ = statistics.median(times["python -c 'import typer'"])
    rows = []
    for label, secs in times.items():
        med = statistics.median(secs)
        rows.append({
            "command": label,
            "argv": [Path(cmds[label][0]).name, *cmds[label][1:]],
            "median_ms": round(med * 1000, 1),
            "min_ms": round(min(secs) * 1000, 1),
            "max_ms": round(max(secs) * 1000, 1),
            "x_python": round(med / base, 2),
            "x_import_typer": round(med / typer_, 2),
            "loads_sqlalchemy": sqlalchemy.get(label),
        })
    return {
        "benchmark": "cli_startup",
        "runs": runs,
        "source": source_info(),
        "results": rows,
        "definitions": {
            "median_ms": f"median wall time of {runs} runs, process start to exit "
                         "(round-robin over the commands, after one warm-up round)",
            "x_python": "median / median of `python -c pass` in the same run",
            "x_import_typer": "median / median of `python -c 'import typer'` in the same run",
            "loads_sqlalchemy": "whether the command imported sqlalchemy "
                                "(PYTHONPROFILEIMPORTTIME listing of one extra run)",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_table(doc: dict[str, Any]) -> None:
    """A short human summary on stdout."""
    print(f"\nCLI start time, median of {doc['runs']} runs "
          f"(lockstep {doc['source']['version']}, Python {doc['machine']['python']})")
    print(f"  {'command':<52} {'median':>8} {'min':>7} {'max':>7} {'x pass':>7} "
          f"{'x typer':>7}  sqlalchemy")
    for r in doc["results"]:
        sa = {True: "loaded", False: "-", None: ""}[r["loads_sqlalchemy"]]
        print(f"  {r['command']:<52} {r['median_ms']:>6.1f}ms {r['min_ms']:>5.1f}ms "
              f"{r['max_ms']:>5.1f}ms {r['x_python']:>7.2f} {r['x_import_typer']:>7.2f}  {sa}")


def main(argv: list[str] | None = None) -> int:
    """Build the sample, time the commands, print and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command (15)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON result file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        import lockstep  # noqa: F401 - the installed (or PYTHONPATH) lockstep wins
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))
    work = Path(tempfile.mkdtemp(prefix="lockstep-startup-")).resolve()
    try:
        env = isolated_env(work)
        repo, first, last = build_sample(work, env)
        cmds = commands(first, last)
        sqlalchemy = {label: loads_sqlalchemy(a, repo, env) for label, a in cmds.items()
                      if label.startswith("lockstep")}
        times = measure(cmds, repo, env, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = summarise(times, cmds, sqlalchemy, args.runs)
    print_table(doc)
    print()
    write_result(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: how soon the artifact wait moves on after the artifact is pushed, against the
real registry (Debian `docker-registry`) on 127.0.0.1, with notifications and polling alone.

Each trial starts a wait for a new repository's tag, pushes the image's blobs, then `--delay`
seconds after the wait started (the spec's R6: the artifact arrives 3 s after its tag) PUTs the
manifest. Latency = from the manifest PUT's start (the registry can notify before the PUT's
answer is read) to `wait_for_artifact` returning. Modes alternate trial by trial, so a busy
moment hits both alike:

    notifications   the registry's webhook to lockstep's NotificationServer, polling as fallback
    polling         polling alone (default backoff 0.5 s → 10 s), no webhook

The prior art polls every 60 s: 30 s mean latency (its theoretical floor, not measured).

    .venv/bin/python bench/artifact_wait.py [--trials 20] [--delay 3] [--out PATH]
        [--release-rounds 3] [--release-delay 1]

It then runs bench/release_depth.py's section in the same run: the wall time of a release of
20 repositories at DAG depths 0, 1, 3 and 4 and of 4 repositories at depth 3 (see there).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import source_info, write_result

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "artifact_wait.json"
PRIOR_ART_MEAN_S = 30.0  # `docker manifest inspect` every 60 s: half the interval on average
TARGETS = {"notifications": 1.0, "polling": 5.0}


def one_trial(reg: Any, hook: Any, mode: str, n: int, delay: float) -> dict[str, Any]:
    """One wait + push; the latency and the checks the wait made."""
    from tests.infra.registry import image_manifest, put_manifest

    from lockstep.registry.distribution import DistributionSource, RegistrySettings
    from lockstep.registry.wait import Progress, wait_for_artifact

    repo = f"bench/{mode}-{n}"
    started = threading.Event()
    out: dict[str, Any] = {}

    def progress(p: Progress) -> None:
        started.set()

    with DistributionSource(RegistrySettings(reg.host, scheme="http")) as src:
        def run() -> None:
            out["found"] = wait_for_artifact(
                src, repo, "1.0", timeout=120, progress=progress,
                notifications=hook if mode == "notifications" else None, registry=reg.host)
            out["ended"] = time.perf_counter()

        t0 = time.perf_counter()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        if not started.wait(30):
            raise SystemExit("the wait made no first check within 30 s")
        with reg.admin(repo) as c:
            body = image_manifest(c, repo, f"bench {mode} {n}")
            pause = t0 + delay - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            put_at = time.perf_counter()
            digest = put_manifest(c, repo, "1.0", body)
        thread.join(130)
    found = out.get("found")
    if found is None or found.digest != digest:
        raise SystemExit(f"trial {mode} {n}: the wait did not return the pushed digest")
    return {"latency_s": out["ended"] - put_at, "checks": found.checks}


def measure_waits(trials: int, delay: float) -> dict[str, list[dict[str, Any]]]:
    """Alternating trials of both modes against one registry and one webhook."""
    from tests.infra.registry import Notify, running_registry

    from lockstep.registry.notifications import NotificationServer

    token = "bench-" + os.urandom(8).hex()
    results: dict[str, list[dict[str, Any]]] = {"notifications": [], "polling": []}
    with NotificationServer(token=token) as hook, \
            running_registry(notify=Notify(hook.url("pending"), token)) as reg:
        import json

        cfg = json.loads(reg.config.read_text())
        cfg["notifications"]["endpoints"][0]["url"] = hook.url(reg.host)
        reg.config.write_text(json.dumps(cfg))
        reg.restart()
        for n in range(trials):
            for mode in ("notifications", "polling"):
                results[mode].append(one_trial(reg, hook, mode, n, delay))
                r = results[mode][-1]
                print(f"  trial {n + 1:>2} {mode:<13} {r['latency_s'] * 1000:8.1f} ms "
                      f"({r['checks']} checks)", flush=True)
    return results


# The 20-repository release part of this benchmark (wall time grows with the DAG's depth, not
# the number of repositories) is added by the release work: a function taking the parsed
# arguments and returning a JSON-able dict (or None to skip), registered here. Its result lands
# under "sections" in the same JSON document, measured in the same run.
EXTRA_SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any] | None]] = {}


def _release_depth(args: argparse.Namespace) -> dict[str, Any] | None:
    """The 20-repository release by DAG depth (bench/release_depth.py), in this same run."""
    if args.release_rounds <= 0:
        return None
    import release_depth

    return release_depth.measure(args.release_delay, args.release_rounds)


EXTRA_SECTIONS["release_depth"] = _release_depth


def summarise(results: dict[str, list[dict[str, Any]]], trials: int, delay: float,
              sections: dict[str, Any]) -> dict[str, Any]:
    """The JSON document."""
    rows = {}
    for mode, rs in results.items():
        lat = [r["latency_s"] for r in rs]
        med = statistics.median(lat)
        rows[mode] = {
            "median_ms": round(med * 1000, 1),
            "min_ms": round(min(lat) * 1000, 1),
            "max_ms": round(max(lat) * 1000, 1),
            "p90_ms": round((statistics.quantiles(lat, n=10, method="inclusive")[-1]
                             if len(lat) > 1 else lat[0]) * 1000, 1),
            "median_checks": statistics.median(r["checks"] for r in rs),
            "target_ms": TARGETS[mode] * 1000,
            "meets_target": med < TARGETS[mode],
            "x_faster_than_prior_art": round(PRIOR_ART_MEAN_S / med, 1),
            "latencies_ms": [round(x * 1000, 1) for x in lat],
        }
    rows["polling"]["x_notifications"] = round(rows["polling"]["median_ms"]
                                               / rows["notifications"]["median_ms"], 1)
    return {
        "benchmark": "artifact_wait",
        "trials": trials,
        "push_delay_s": delay,
        "source": source_info(),
        "results": rows,
        "prior_art_mean_ms": PRIOR_ART_MEAN_S * 1000,
        "sections": sections,
        "definitions": {
            "latency": "from the start of the manifest PUT to wait_for_artifact returning "
                       "(time.perf_counter in the same process)",
            "push_delay_s": "the manifest PUT starts this long after the wait started",
            "x_faster_than_prior_art": "30 s (mean latency of a 60 s poll) / median",
            "x_notifications": "polling median / notifications median, same run",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_table(doc: dict[str, Any]) -> None:
    """A short human summary on stdout."""
    print(f"\nArtifact wait latency after the manifest push, median of {doc['trials']} trials "
          f"(push {doc['push_delay_s']:g} s after the wait starts)")
    print(f"  {'mode':<14} {'median':>9} {'p90':>9} {'max':>9} {'target':>8}  "
          f"{'x prior art (30 s)':>18}")
    for mode, r in doc["results"].items():
        print(f"  {mode:<14} {r['median_ms']:>7.1f}ms {r['p90_ms']:>7.1f}ms "
              f"{r['max_ms']:>7.1f}ms {r['target_ms'] / 1000:>6.0f} s  "
              f"{r['x_faster_than_prior_art']:>17.1f}x"
              + ("" if r["meets_target"] else "  MISSED TARGET"))
    print(f"  polling / notifications: {doc['results']['polling']['x_notifications']}x")


def main(argv: list[str] | None = None) -> int:
    """Run the trials, print and write the JSON; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=20, help="trials per mode (20)")
    parser.add_argument("--delay", type=float, default=3.0,
                        help="seconds from the wait's start to the manifest PUT (3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON result file")
    parser.add_argument("--release-rounds", type=int, default=3,
                        help="rounds of the release-by-depth section (0 skips it)")
    parser.add_argument("--release-delay", type=float, default=1.0,
                        help="seconds the CI hook takes to build an artifact in that section")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    sys.path.insert(0, str(ROOT))  # tests.infra: the registry fixture
    try:
        import lockstep  # noqa: F401 - the installed (or PYTHONPATH) lockstep wins
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))
    results = measure_waits(args.trials, args.delay)
    sections = {name: fn(args) for name, fn in EXTRA_SECTIONS.items()}
    doc = summarise(results, args.trials, args.delay, sections)
    print_table(doc)
    print()
    write_result(args.out, doc)
    return 0 if all(r["meets_target"] for r in doc["results"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

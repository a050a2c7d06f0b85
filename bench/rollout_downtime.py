"""Benchmark: what a client sees of a WaitUntilReady rollout through the stable endpoint, against
the same upgrade done by hand (the floor), side by side in one run.

The managed system: a workspace, `lockstep controller run -C ws` as a subprocess, and an
Environment `bench` with one stateful component `db` running the demo service
(`demo.local/demo/demo-service:v1`). The rollouts v1 → v2 → … (WaitUntilReady) are applied
with `lockstep rollout apply`; each ends when the stored status is Applied with the new active
generation. The floor: the demo service started by hand (generation 0, its own data), upgraded
as a shell script would: SIGTERM the old process, wait for it to exit, start the new release,
wait for its `listening` line, point the client at the new address.

The client (the same code for both) runs two threads against its target, each opening a new
TCP connection per request (no keep-alive, so every request goes through the endpoint's
routing): a writer PUTting an increasing counter and a reader GETting it. A read fails on an
error, a non-200 answer, or a value older than the last write acknowledged before it started.

    .venv/bin/python bench/rollout_downtime.py [--rollouts 5] [--out PATH] [--tmp DIR] [--keep]

Per rollout: requests, failed reads and writes, the longest write-unavailable window (the
longest gap between two successful writes' completions overlapping the upgrade), the longest
read gap likewise, and — managed only — the controller latency from the new generation
entering ReadyToPromote to the promote call reaching it, from the wall-clock timestamps the
service logs (`generation N: ReadyToPromote`, `generation N promoting`).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import prepare, source_info, source_label, write_result

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "rollout_downtime.json"
ENV = "bench"
IMAGE = "demo.local/demo/demo-service"
TARGETS = {"failed_reads": 0, "write_window_ms": 1000.0, "promote_latency_ms": 500.0}
SETTLE = 0.5  # seconds of steady traffic before and after each upgrade
REQUEST_TIMEOUT = 15.0


# --- the client ----------------------------------------------------------------------------------

@dataclass
class Request:
    """One request: kind, start and end (perf_counter), success, and why it failed."""

    kind: str
    start: float
    end: float
    ok: bool
    why: str = ""


@dataclass
class Client:
    """A writer and a reader thread, one new connection per request, against `target()`."""

    target: Callable[[], str]
    interval: float
    requests: list[Request] = field(default_factory=list)
    acked: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _call(self, method: str, body: bytes | None) -> tuple[int, bytes]:
        host, port = self.target().rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT)
        try:
            conn.request(method, "/kv/counter", body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _record(self, kind: str, start: float, ok: bool, why: str = "") -> None:
        with self._lock:
            self.requests.append(Request(kind, start, time.perf_counter(), ok, why))

    def _write_loop(self) -> None:
        n = self.acked
        while not self._stop.is_set():
            n += 1
            t0 = time.perf_counter()
            try:
                status, body = self._call("PUT", str(n).encode())
            except (OSError, http.client.HTTPException) as exc:
                self._record("write", t0, False, type(exc).__name__)
            else:
                if status == 200:
                    self.acked = n
                self._record("write", t0, status == 200,
                             "" if status == 200 else f"{status} {body[:80]!r}")
            self._stop.wait(self.interval)

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            floor = self.acked
            t0 = time.perf_counter()
            try:
                status, body = self._call("GET", None)
            except (OSError, http.client.HTTPException) as exc:
                self._record("read", t0, False, type(exc).__name__)
            else:
                if status != 200:
                    self._record("read", t0, False, f"{status} {body[:80]!r}")
                else:
                    value = int(json.loads(body)["value"])
                    self._record("read", t0, value >= floor,
                                 "" if value >= floor else f"stale {value} < {floor}")
            self._stop.wait(self.interval)

    def start(self) -> None:
        """Write the first value, then start both threads."""
        status, body = self._call("PUT", b"0")
        if status != 200:
            raise SystemExit(f"the first write failed: {status} {body!r}")
        self._stop.clear()
        self._threads = [threading.Thread(target=f, daemon=True)
                         for f in (self._write_loop, self._read_loop)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop both threads after their current request."""
        self._stop.set()
        for t in self._threads:
            t.join(REQUEST_TIMEOUT + 5)


def _longest_gap(requests: list[Request], kind: str, t0: float, t1: float) -> float:
    """The longest interval between successive successful completions of `kind` that overlaps
    [t0, t1] (completions just outside the span bound it)."""
    ends = sorted(r.end for r in requests if r.kind == kind and r.ok)
    before = [e for e in ends if e <= t0]
    after = [e for e in ends if e >= t1]
    inside = [e for e in ends if t0 < e < t1]
    points = ([before[-1]] if before else [t0]) + inside + ([after[0]] if after else [t1])
    return max(b - a for a, b in itertools.pairwise(points))


def summarise_window(client: Client, t0: float, t1: float) -> dict[str, Any]:
    """What the client saw from SETTLE before t0 to the end of the traffic after t1."""
    rs = [r for r in client.requests if r.start >= t0 - SETTLE]
    failed = [r for r in rs if not r.ok]
    return {
        "requests": len(rs),
        "reads": sum(r.kind == "read" for r in rs),
        "writes": sum(r.kind == "write" for r in rs),
        "failed_reads": sum(r.kind == "read" for r in failed),
        "failed_writes": sum(r.kind == "write" for r in failed),
        "write_window_ms": round(_longest_gap(rs, "write", t0, t1) * 1000, 1),
        "read_gap_ms": round(_longest_gap(rs, "read", t0, t1) * 1000, 1),
        "slowest_read_ms": round(max((r.end - r.start for r in rs if r.kind == "read"),
                                     default=0.0) * 1000, 1),
        "upgrade_s": round(t1 - t0, 3),
        "failures": sorted({f"{r.kind}: {r.why}" for r in failed})[:10],
    }


# --- the managed system --------------------------------------------------------------------------

def lockstep(ws: Path, *args: str) -> None:
    """Run the CLI against workspace `ws`; exit on failure."""
    done = subprocess.run([sys.executable, "-m", "lockstep", *args, "-C", str(ws)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"lockstep {' '.join(args)} failed: {done.stderr.strip()}")


def apply(ws: Path, tag: str) -> None:
    """`lockstep rollout apply` the Environment at release `tag`."""
    path = ws / "env.json"
    path.write_text(json.dumps({
        "apiVersion": "lockstep.dev/v1alpha2", "kind": "Environment",
        "metadata": {"name": ENV},
        "spec": {"rolloutStrategy": "WaitUntilReady",
                 "components": {"db": {"image": f"{IMAGE}:{tag}"}}}}), encoding="utf-8")
    lockstep(ws, "rollout", "apply", str(path))


def wait_applied(store: Any, generation: int, timeout: float = 120.0) -> float:
    """Poll the stored status every 10 ms until Applied with `generation` active; the time."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        status = store.get(ENV).full().get("status") or {}
        cond = next(iter(status.get("conditions") or []), {})
        if cond.get("reason") == "Applied" and status.get("activeGeneration") == generation:
            return time.perf_counter()
        time.sleep(0.01)
    raise SystemExit(f"generation {generation} was not Applied within {timeout:.0f} s: {status}")


def _log_time(line: str) -> datetime:
    """The wall-clock timestamp of a `%(asctime)s`-formatted log line (local time, ms)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def promote_latency(log: Path, generation: int) -> float | None:
    """Seconds from `generation N: ReadyToPromote` to `generation N promoting` in its log."""
    ready = promoting = None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if ready is None and (line.endswith(f"generation {generation}: ReadyToPromote")
                              or line.endswith(f"generation {generation} catch-up skipped: "
                                               "ReadyToPromote")):
            ready = _log_time(line)
        elif promoting is None and line.endswith(f"generation {generation} promoting"):
            promoting = _log_time(line)
    if ready is None or promoting is None:
        return None
    return (promoting - ready).total_seconds()


# --- the floor -----------------------------------------------------------------------------------

class ByHand:
    """The demo service run and upgraded the way a shell script would."""

    def __init__(self, work: Path) -> None:
        self.data = work / "by-hand" / "data"
        self.data.mkdir(parents=True)
        self.logs = work / "by-hand"
        self.proc: subprocess.Popen[bytes] | None = None
        self.public = ""

    def start(self, tag: str) -> None:
        """Start release `tag` and wait for its `listening` line (its public address)."""
        log = open(self.logs / f"{tag}.log", "wb")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lockstep.rollout.demo_service", "--data", str(self.data),
             "--release", tag, "--public-addr", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8",
                 "PYTHONPATH": os.pathsep.join(sys.path)})
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.public = json.loads(line)["public"]

    def stop(self) -> None:
        """SIGTERM the running process and wait for it."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None


# --- the run -------------------------------------------------------------------------------------

def run(rollouts: int, interval: float, work: Path) -> dict[str, Any]:
    """Start both systems, then alternate: a managed rollout, the same upgrade by hand."""
    from lockstep.rollout.controller import store_path
    from lockstep.rollout.driver import LocalDriver
    from lockstep.rollout.store import EnvironmentStore

    ws = work / "ws"
    ws.mkdir()
    controller_log = open(work / "controller.log", "wb")  # noqa: SIM115 - the child keeps it
    controller = subprocess.Popen([sys.executable, "-m", "lockstep", "controller", "run",
                                   "-C", str(ws)], stdout=controller_log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
    controller_log.close()
    driver = LocalDriver(ws)
    hand = ByHand(work)
    managed_rows: list[dict[str, Any]] = []
    floor_rows: list[dict[str, Any]] = []
    try:
        apply(ws, "v1")
        store = EnvironmentStore(store_path(ws))
        wait_applied(store, 1)
        endpoint = driver.endpoint(ENV, "db")
        if endpoint is None:
            raise SystemExit("the controller started no endpoint for bench-db")
        print(f"endpoint bench-db at {endpoint}; by hand: started v1", flush=True)
        hand.start("v1")
        for k in range(1, rollouts + 1):
            old, new = f"v{k}", f"v{k + 1}"
            client = Client(lambda: endpoint, interval)
            client.start()
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            apply(ws, new)
            t1 = wait_applied(store, k + 1)
            time.sleep(SETTLE)
            client.stop()
            row = summarise_window(client, t0, t1)
            latency = promote_latency(driver.env_dir(ENV) / "logs" / f"{ENV}-db-{k + 1}.log",
                                      k + 1)
            row |= {"from": old, "to": new, "generation": k + 1,
                    "promote_latency_ms": None if latency is None else round(latency * 1000, 1),
                    "endpoint_unchanged": driver.endpoint(ENV, "db") == endpoint}
            managed_rows.append(row)
            print(f"  managed {old}->{new}: {row['requests']} requests, failed reads "
                  f"{row['failed_reads']}, failed writes {row['failed_writes']}, write window "
                  f"{row['write_window_ms']} ms, ReadyToPromote->promote "
                  f"{row['promote_latency_ms']} ms", flush=True)

            client = Client(lambda: hand.public, interval)
            client.start()
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            hand.stop()
            hand.start(new)
            t1 = time.perf_counter()
            time.sleep(SETTLE)
            client.stop()
            row = summarise_window(client, t0, t1) | {"from": old, "to": new}
            floor_rows.append(row)
            print(f"  by hand {old}->{new}: {row['requests']} requests, failed reads "
                  f"{row['failed_reads']}, failed writes {row['failed_writes']}, write window "
                  f"{row['write_window_ms']} ms", flush=True)
    finally:
        hand.stop()
        controller.send_signal(signal.SIGTERM)
        controller.wait(30)
        for record in driver.records(ENV):
            driver.teardown(ENV, record["generation"])
        driver.endpoints.stop_all(ENV)
        driver.close()
    return {"managed": managed_rows, "by_hand": floor_rows}


def _stats(rows: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def summarise(raw: dict[str, Any], rollouts: int, interval: float) -> dict[str, Any]:
    """The JSON document."""
    managed, floor = raw["managed"], raw["by_hand"]
    window = _stats(managed, "write_window_ms")
    floor_window = _stats(floor, "write_window_ms")
    latency = _stats(managed, "promote_latency_ms")
    results = {
        "managed": {
            "requests": sum(r["requests"] for r in managed),
            "failed_reads": sum(r["failed_reads"] for r in managed),
            "failed_writes": sum(r["failed_writes"] for r in managed),
            "write_window_ms": window,
            "read_gap_ms": _stats(managed, "read_gap_ms"),
            "slowest_read_ms": _stats(managed, "slowest_read_ms"),
            "promote_latency_ms": latency,
            "upgrade_s": _stats(managed, "upgrade_s"),
            "endpoint_unchanged": all(r["endpoint_unchanged"] for r in managed),
        },
        "by_hand": {
            "requests": sum(r["requests"] for r in floor),
            "failed_reads": sum(r["failed_reads"] for r in floor),
            "failed_writes": sum(r["failed_writes"] for r in floor),
            "write_window_ms": floor_window,
            "read_gap_ms": _stats(floor, "read_gap_ms"),
            "upgrade_s": _stats(floor, "upgrade_s"),
        },
    }
    med, fmed = window["median"], floor_window["median"]
    results["x_floor_write_window_median"] = round(med / fmed, 2) if med and fmed else None
    results["meets_targets"] = {
        "failed_reads": results["managed"]["failed_reads"] <= TARGETS["failed_reads"],
        "write_window_ms": (window["max"] or 0) < TARGETS["write_window_ms"],
        "promote_latency_ms": latency["max"] is not None
        and latency["max"] < TARGETS["promote_latency_ms"],
    }
    return {
        "benchmark": "rollout_downtime",
        "rollouts": rollouts,
        "client_interval_s": interval,
        "source": source_info(),
        "targets": TARGETS,
        "results": results,
        "rollouts_detail": raw,
        "definitions": {
            "client": "two threads (writer, reader), a new TCP connection per request, "
                      "`client_interval_s` pause after each request",
            "failed_read": "an error, a non-200 answer, or a value older than the last write "
                           "acknowledged before the read started",
            "write_window_ms": "longest interval between consecutive successful writes' "
                               "completions that overlaps the upgrade",
            "upgrade": "managed: from `rollout apply` to the stored status Applied with the "
                       "new generation; by hand: from SIGTERM to the new process's listening "
                       "line",
            "promote_latency_ms": "from the new generation's log line entering ReadyToPromote "
                                  "to its `promoting` line (the promote call arriving), "
                                  "the service's own wall-clock timestamps",
            "x_floor_write_window_median": "managed median write window / by-hand median",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_table(doc: dict[str, Any]) -> None:
    """A short human summary on stdout."""
    r = doc["results"]
    m, f = r["managed"], r["by_hand"]
    print(f"\nRollout downtime, {doc['rollouts']} upgrades each "
          f"({source_label(doc['source'])})")
    print(f"  {'':<9} {'requests':>8} {'failed reads':>12} {'failed writes':>13} "
          f"{'write window median/max':>24}")
    for name, row in (("managed", m), ("by hand", f)):
        w = row["write_window_ms"]
        print(f"  {name:<9} {row['requests']:>8} {row['failed_reads']:>12} "
              f"{row['failed_writes']:>13} {w['median']:>12} / {w['max']} ms")
    lat = m["promote_latency_ms"]
    print(f"  ReadyToPromote -> promote: median {lat['median']} ms, max {lat['max']} ms")
    print(f"  managed / by-hand write window (median): {r['x_floor_write_window_median']}x")
    for target, met in r["meets_targets"].items():
        print(f"  target {target}: {'met' if met else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    """Run, print and write the JSON; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rollouts", type=int, default=5, help="upgrades per system (5)")
    parser.add_argument("--interval", type=float, default=0.005,
                        help="client pause after each request, seconds (0.005)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON result file")
    parser.add_argument("--tmp", type=Path, default=None, help="where to build the systems")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.rollouts < 1:
        parser.error("--rollouts must be at least 1")
    work = prepare("lockstep-rollout-downtime-", args.tmp, ROOT)
    try:
        raw = run(args.rollouts, args.interval, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    doc = summarise(raw, args.rollouts, args.interval)
    print_table(doc)
    write_result(args.out, doc)
    return 0 if all(doc["results"]["meets_targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

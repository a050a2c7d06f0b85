"""Load on `lockstep serve`: N clients poll the queue while M submissions arrive.

The server runs as its own process (`python -m lockstep serve`) over a throwaway system with
local bare remotes; this process is the load: `--clients` pollers, each asking every
`--interval` seconds (half for `/api/queue`, what `queue status --json` prints, half for
`/api/overview`, what the status page polls), while `--submissions` bumps are POSTed at
`--rate` per second. Every answer must be a 2xx, and afterwards every submission must be in
the queue exactly once. Latency percentiles go to bench/results/serve_load.json.

    .venv/bin/python bench/serve_load.py                        # 200 clients, 100 submissions
    .venv/bin/python bench/serve_load.py --clients 20 --submissions 10 --out /tmp/s.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import git_version, prepare, source_info, write_result
from queue_overhead import build_system, submissions

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "serve_load.json"
TOKEN = "serve-load-benchmark-token-0123"
POLL_PATHS = ("/api/queue", "/api/overview")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(ws: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`lockstep serve` in its own session; returns it and its URL once it answers."""
    import httpx

    port = free_port()
    env = dict(os.environ, LOCKSTEP_SERVE_TOKEN=TOKEN, PYTHONPATH=str(ROOT / "src"))
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lockstep", "serve", "-C", str(ws),
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lockstep serve exited {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/openapi.json", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    stop_server(proc)
    raise TimeoutError("lockstep serve did not answer within 60 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Tally:
    """Latencies (seconds) per request kind, and every failure."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []

    def record(self, kind: str, started: float, status: int | None, what: str = "") -> None:
        self.latency[kind].append(time.perf_counter() - started)
        if status is None or not 200 <= status < 300:
            self.errors.append(f"{kind}: {status} {what}"[:300])


class Connection:
    """One client's keep-alive HTTP/1.1 connection, spoken with asyncio streams: a load
    generator must cost the machine much less than the server it measures (an httpx request
    costs several times what the server spends answering it)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Send one request and read the whole answer (Content-Length or chunked)."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 f"Content-Length: {len(body)}", "Content-Type: application/json",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *fields = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        found = {k.strip().lower(): v.strip() for k, _, v in
                 (f.partition(":") for f in fields if f)}
        if "content-length" in found:
            data = await self.reader.readexactly(int(found["content-length"]))
        elif found.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                data += await self.reader.readexactly(size)
                await self.reader.readline()
            await self.reader.readline()
        else:
            data = await self.reader.read()
        if found.get("connection", "").lower() == "close":
            await self.close()
        return status, data

    async def close(self) -> None:
        """Close the connection (the next request opens another)."""
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def poller(host: str, port: int, path: str, interval: float, done: asyncio.Event,
                 tally: Tally) -> None:
    """Poll `path` every `interval` seconds (first after a random offset) until `done`."""
    conn = Connection(host, port)
    await asyncio.sleep(random.uniform(0, interval))
    while not done.is_set():
        started = time.perf_counter()
        try:
            status, data = await conn.request("GET", path)
            tally.record(path, started, status, data[:200].decode(errors="replace"))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            tally.record(path, started, None, repr(exc))
            await conn.close()
        elapsed = time.perf_counter() - started
        await asyncio.sleep(max(0.0, interval - elapsed))
    await conn.close()


async def submitter(host: str, port: int, bumps: list[tuple[str, str]], rate: float,
                    tally: Tally) -> list[str]:
    """POST each bump on its own connection, one every 1/rate seconds (concurrently: a slow
    answer delays none)."""

    async def one(component: str, version: str) -> str | None:
        conn = Connection(host, port)
        started = time.perf_counter()
        body = json.dumps({"component": component, "version": version}).encode()
        try:
            status, data = await conn.request("POST", "/api/queue/items", body,
                                              {"Authorization": f"Bearer {TOKEN}"})
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            tally.record("submit", started, None, repr(exc))
            return None
        finally:
            await conn.close()
        tally.record("submit", started, status, data[:200].decode(errors="replace"))
        return str(json.loads(data)["id"]) if status == 201 else None

    tasks = []
    for component, version in bumps:
        tasks.append(asyncio.create_task(one(component, version)))
        await asyncio.sleep(1.0 / rate)
    return [i for i in await asyncio.gather(*tasks) if i is not None]


async def load(url: str, clients: int, bumps: list[tuple[str, str]], interval: float,
               rate: float) -> tuple[Tally, list[str], float]:
    """Run the pollers and the submissions; the pollers stop one interval after the last
    submission was answered."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    tally = Tally()
    done = asyncio.Event()
    pollers = [asyncio.create_task(poller(host, int(port), POLL_PATHS[i % len(POLL_PATHS)],
                                          interval, done, tally)) for i in range(clients)]
    await asyncio.sleep(interval)  # every poller is polling before the first submission
    started = time.perf_counter()
    ids = await submitter(host, int(port), bumps, rate, tally)
    await asyncio.sleep(interval)
    seconds = time.perf_counter() - started
    done.set()
    await asyncio.gather(*pollers)
    return tally, ids, seconds


def lost_submissions(url: str, bumps: list[tuple[str, str]], ids: list[str]) -> list[str]:
    """What the queue does not hold exactly once: every bump sent, by id and by content."""
    import httpx

    doc = httpx.get(f"{url}/api/queue", params={"all": "true"}, timeout=60).json()
    held = doc["items"] + doc["recent"]
    problems = []
    by_id = defaultdict(int)
    for i in held:
        by_id[i["id"]] += 1
    problems += [f"{i} not in the queue" for i in ids if by_id[i] != 1]
    got = sorted((i["component"], i["version"]) for i in held)
    if got != sorted(bumps):
        problems.append(f"queue holds {len(got)} bumps, {len(bumps)} were submitted")
    return problems


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max in milliseconds."""
    if not values:
        return {}
    ms = sorted(v * 1000 for v in values)
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"count": len(ms), "p50_ms": round(cuts[49], 2), "p95_ms": round(cuts[94], 2),
            "p99_ms": round(cuts[98], 2), "max_ms": round(ms[-1], 2)}


def run(clients: int, count: int, interval: float, rate: float, work: Path
        ) -> dict[str, Any]:
    """Build the system, start the server, load it, check, stop; the result document."""
    load_before = [round(x, 2) for x in os.getloadavg()]  # other work on the machine
    ws = build_system(work / "system", count)
    bumps = submissions(count)
    proc, url = start_server(ws, work / "serve.log")
    try:
        tally, ids, seconds = asyncio.run(load(url, clients, bumps, interval, rate))
        lost = lost_submissions(url, bumps, ids)
    finally:
        stop_server(proc)
    polls = [v for p in POLL_PATHS for v in tally.latency[p]]
    return {
        "benchmark": "serve_load",
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source_info(),
        "machine": {"cpus": os.cpu_count(), "load_average_before": load_before,
                    "python": platform.python_version(), "git": git_version(), "uvicorn_extras": {
                        m: importlib.util.find_spec(m) is not None
                        for m in ("httptools", "uvloop")}},
        "command": "python bench/serve_load.py " + " ".join(sys.argv[1:]),
        "settings": {"clients": clients, "submissions": count, "poll_interval_s": interval,
                     "submit_rate_per_s": rate, "poll_paths": list(POLL_PATHS)},
        "seconds": round(seconds, 2),
        "requests": sum(len(v) for v in tally.latency.values()),
        "errors": len(tally.errors),
        "first_errors": tally.errors[:5],
        "submitted": len(ids),
        "lost": lost,
        "poll": percentiles(polls),
        "per_path": {p: percentiles(tally.latency[p]) for p in POLL_PATHS},
        "submit": percentiles(tally.latency["submit"]),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the load; exit 1 (writing no JSON) on any error or lost submission."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=200, help="concurrent pollers (200)")
    parser.add_argument("--submissions", type=int, default=100, help="bumps POSTed (100)")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between one client's polls (1.0, the page's)")
    parser.add_argument("--rate", type=float, default=10.0, help="submissions per second (10)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON result file")
    parser.add_argument("--tmp", type=Path, default=None, help="where to build the system")
    parser.add_argument("--keep", action="store_true", help="keep the system and server log")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.submissions < 1 or args.interval <= 0 or args.rate <= 0:
        parser.error("--clients and --submissions must be at least 1; --interval and --rate "
                     "positive")
    work = prepare("lockstep-serve-load-", args.tmp, ROOT)
    try:
        doc = run(args.clients, args.submissions, args.interval, args.rate, work)
    finally:
        if args.keep:
            print(f"system and server log kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{doc['requests']} requests in {doc['seconds']} s; errors {doc['errors']}; "
          f"submitted {doc['submitted']}/{args.submissions}; lost {len(doc['lost'])}")
    print(f"poll p50 {doc['poll'].get('p50_ms')} ms, p95 {doc['poll'].get('p95_ms')} ms; "
          f"submit p95 {doc['submit'].get('p95_ms')} ms")
    if doc["errors"] or doc["lost"] or doc["submitted"] != args.submissions:
        print(f"FAILED: {doc['first_errors'] or doc['lost']}", file=sys.stderr)
        return 1
    write_result(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())

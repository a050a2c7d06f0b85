"""The managed-service protocol (spec rollouts §6, scenarios S1–S3): the pure boot rules, the
shared state's compare-and-set across processes, and the demo service run as real processes,
synchronised on their endpoints' answers and their exits."""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockstep.errors import ConfigError
from lockstep.rollout.protocol import (
    ENV_GENERATION,
    ENV_INTERNAL_ADDR,
    BootRule,
    Hooks,
    LeaderRecord,
    ManagedService,
    NotLeader,
    Phase,
    SharedState,
    boot_rule,
    generation_from_env,
    parse_addr,
    release_is_newer,
    release_key,
)

OLD, NEW, NEWER = "v2026.10.7", "v2026.11.3", "v2026.12.1"
TIMEOUT = 30.0  # generous: the 2 cores are shared; every wait ends early on its event


# --- pure ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("record", "generation", "release", "expected"), [
    (None, 3, NEW, BootRule.INITIALISE),
    (LeaderRecord(4, NEWER), 5, NEW, BootRule.REFUSE),   # older release: refused, not read-only
    (LeaderRecord(4, NEWER), 4, NEW, BootRule.REFUSE),   # … not leader
    (LeaderRecord(4, NEWER), 2, NEW, BootRule.REFUSE),   # … and not fenced
    (LeaderRecord(4, NEW, store_format=99), 4, NEW, BootRule.REFUSE),
    (LeaderRecord(4, NEW), 4, NEW, BootRule.LEADER),
    (LeaderRecord(3, NEW), 4, NEWER, BootRule.READ_ONLY),
    (LeaderRecord(3, NEW), 4, NEW, BootRule.READ_ONLY),
    (LeaderRecord(4, NEW), 2, NEW, BootRule.FENCED),
    (LeaderRecord(4, OLD), 2, NEW, BootRule.FENCED),     # a newer release is fenced like any other
    (LeaderRecord(4, "main"), 5, "feature-x", BootRule.READ_ONLY),  # unparsable: no check
])
def test_boot_rules(record: LeaderRecord | None, generation: int, release: str,
                    expected: BootRule) -> None:
    assert boot_rule(record, generation, release) is expected


def test_release_order() -> None:
    ordered = ["v1.9", "1.10", "v2026.9.1", "v2026.10.7-rc.1", "v2026.10.7", "v2026.10.7.1",
               "v2026.11.3"]
    keys = [release_key(r) for r in ordered]
    assert keys == sorted(keys)  # type: ignore[type-var]
    assert len(set(keys)) == len(keys)
    assert release_key("latest") is None
    assert release_is_newer(NEWER, NEW) and not release_is_newer(NEW, NEWER)
    assert not release_is_newer(NEW, NEW) and not release_is_newer("latest", NEW)


def test_environment_parsing() -> None:
    assert generation_from_env({}) == 0
    assert generation_from_env({ENV_GENERATION: " 12 "}) == 12
    for bad in ("-1", "x", "1.5", "٣"):
        with pytest.raises(ConfigError, match=ENV_GENERATION):
            generation_from_env({ENV_GENERATION: bad})
    assert parse_addr("127.0.0.1:0", "x") == ("127.0.0.1", 0)
    assert parse_addr("[::1]:8080", "x") == ("::1", 8080)
    for bad in ("localhost", ":80", "h:99999", "h:port"):
        with pytest.raises(ConfigError, match="HOST:PORT"):
            parse_addr(bad, "x")


# --- shared state across processes ---------------------------------------------------------------

def _race(path: str, generation: int, barrier: Any, results: Any) -> None:
    """One contender: initialise, then compare-and-set 3 → generation, both after the barrier."""
    state = SharedState(Path(path))
    barrier.wait()
    _, created = state.initialise(3, NEW)
    barrier.wait()
    results.put((generation, created, state.compare_and_set(3, generation, NEW)))


def test_initialise_and_compare_and_set_have_one_winner_across_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path / "s.db"), 4 + i, barrier, results))
             for i in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=TIMEOUT) for _ in procs]
    for p in procs:
        p.join(TIMEOUT)
        assert p.exitcode == 0
    assert sum(created for _, created, _ in outcomes) == 1
    winners = [g for g, _, moved in outcomes if moved]
    assert len(winners) == 1
    assert SharedState(tmp_path / "s.db").read() == LeaderRecord(winners[0], NEW)


def test_promotion_whose_compare_and_set_fails_exits_as_fenced(tmp_path: Path) -> None:
    """Another candidate promoted first: promote answers Success, the CAS fails, exit 0, and
    stateGeneration keeps the other candidate's value."""
    state = SharedState(tmp_path / "s.db")
    state.initialise(3, NEW)
    service = ManagedService(state, NEWER, generation=4, internal_addr=("127.0.0.1", 0),
                             fence_interval=10.0)
    assert service.start() is BootRule.READ_ONLY
    try:
        deadline = time.monotonic() + TIMEOUT
        while service.phase is not Phase.READY_TO_PROMOTE:
            assert time.monotonic() < deadline
            assert service.wait(0.01) is None
        assert state.compare_and_set(3, 5, NEWER)
        assert service.promote() is None
        assert service.wait(TIMEOUT) == 0
        assert service.fenced
        assert state.read() == LeaderRecord(5, NEWER)
        with pytest.raises(Exception, match="fenced"), service.writing():
            pass
    finally:
        service.close()


def test_writing_requires_leadership(tmp_path: Path) -> None:
    state = SharedState(tmp_path / "s.db")
    state.initialise(3, NEW)

    class Never(Hooks):
        def caught_up(self) -> bool:
            return False

    service = ManagedService(state, NEW, generation=4, internal_addr=("127.0.0.1", 0),
                             hooks=Never())
    service.start()
    try:
        with pytest.raises(NotLeader, match="read-only"), service.writing():
            pass
        assert state.read() == LeaderRecord(3, NEW)
    finally:
        service.close()


# --- the demo service as real processes ----------------------------------------------------------

class Demo:
    """One generation of the demo service as a real process, with clients for both listeners."""

    def __init__(self, data: Path, generation: int, release: str, *extra: str) -> None:
        self.generation = generation
        self.log = data.parent / f"gen{generation}-{release}-{time.monotonic_ns()}.log"
        env = dict(os.environ, **{ENV_GENERATION: str(generation),
                                  ENV_INTERNAL_ADDR: "127.0.0.1:0"})
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lockstep.rollout.demo_service", "--data", str(data),
                 "--release", release, "--public-addr", "127.0.0.1:0", *extra],
                env=env, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True)
        self.listening: dict[str, Any] | None = None
        self.http = httpx.Client(timeout=10.0)

    def wait_listening(self) -> Demo:
        """Block until the process prints its listening line (fails if it exits first)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        assert line, f"no listening line (rc={self.proc.poll()}):\n{self.stderr()}"
        self.listening = json.loads(line)
        return self

    def stderr(self) -> str:
        """The process's log so far (stderr), for assertion messages."""
        return self.log.read_text(errors="replace")

    def _internal(self, path: str) -> str:
        assert self.listening is not None
        return f"http://{self.listening['internal']}{path}"

    def _public(self, path: str) -> str:
        assert self.listening is not None
        return f"http://{self.listening['public']}{path}"

    def status(self) -> str:
        """GET /api/leader/status."""
        r = self.http.get(self._internal("/api/leader/status"))
        assert r.status_code == 200
        return str(r.json()["status"])

    def promote(self) -> httpx.Response:
        """POST /api/leader/promote."""
        return self.http.post(self._internal("/api/leader/promote"))

    def skip_catchup(self) -> httpx.Response:
        """POST /api/leader/skip-catchup."""
        return self.http.post(self._internal("/api/leader/skip-catchup"))

    def info(self) -> dict[str, Any]:
        """The demo's GET /info (internal phase included)."""
        return dict(self.http.get(self._public("/info")).json())

    def put(self, key: str, value: str) -> httpx.Response:
        return self.http.put(self._public(f"/kv/{key}"), content=value.encode())

    def get(self, key: str) -> httpx.Response:
        return self.http.get(self._public(f"/kv/{key}"))

    def wait_status(self, wanted: str, allowed: set[str]) -> list[str]:
        """Poll the status endpoint until `wanted`; every answer on the way must be allowed."""
        seen: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            status = self.status()
            if not seen or seen[-1] != status:
                seen.append(status)
            assert status in allowed | {wanted}, (seen, self.stderr())
            if status == wanted:
                return seen
            assert time.monotonic() < deadline, (seen, self.stderr())
            assert self.proc.poll() is None, self.stderr()
            time.sleep(0.01)

    def wait_phase(self, phase: str) -> None:
        """Poll the demo's /info until its internal phase is `phase`."""
        deadline = time.monotonic() + TIMEOUT
        while self.info()["phase"] != phase:
            assert time.monotonic() < deadline, self.stderr()
            time.sleep(0.01)

    def exit_code(self, timeout: float = TIMEOUT) -> int:
        """Wait for the process to exit; its status."""
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Kill the process if still running and release its pipes and client."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.http.close()


@pytest.fixture
def demos(tmp_path: Path) -> Iterator[Any]:
    """Start demo generations on one data directory; every process is reaped at the end."""
    started: list[Demo] = []
    data = tmp_path / "data"

    def start(generation: int, release: str, *extra: str, listen: bool = True) -> Demo:
        demo = Demo(data, generation, release, *extra)
        started.append(demo)
        return demo.wait_listening() if listen else demo

    start.data = data  # type: ignore[attr-defined]
    yield start
    for demo in started:
        demo.close()


def _state(data: Path) -> SharedState:
    return SharedState(data / "state.sqlite3")


def test_s1_read_only_generation_promotes_and_fences_the_leader(demos: Any) -> None:
    data: Path = demos.data
    gen3 = demos(3, NEW, "--fence-interval", "1")
    assert gen3.listening is not None and gen3.listening["role"] == "leader"
    gen3.wait_status("IsLeader", {"Initializing"})
    assert _state(data).read() == LeaderRecord(3, NEW)  # first boot initialised the state
    assert gen3.put("greeting", "hello").status_code == 200
    before = (data / "state.sqlite3").read_bytes()

    gen4 = demos(4, NEWER, "--catchup-delay", "1")
    assert gen4.listening is not None and gen4.listening["role"] == "read-only"
    seen = gen4.wait_status("ReadyToPromote", {"Initializing"})
    assert seen == ["Initializing", "ReadyToPromote"]
    # read-only: it serves reads, refuses writes and wrote nothing at all
    assert gen4.get("greeting").json()["value"] == "hello"
    refused = gen4.put("greeting", "from 4 too early")
    assert refused.status_code == 503 and refused.json()["reason"] == "read-only"
    assert (data / "state.sqlite3").read_bytes() == before
    assert gen3.status() == "IsLeader"

    promoted = gen4.promote()
    assert (promoted.status_code, promoted.json()) == (200, {"result": "Success"})
    t_promoted = time.monotonic()
    gen4.wait_status("IsLeader", {"Promoting"})
    assert _state(data).read() == LeaderRecord(4, NEWER)
    assert gen3.exit_code() == 0
    assert time.monotonic() - t_promoted < 10.0  # §6: fenced within 10 s (here: a 1 s interval)
    assert "fenced" in gen3.stderr()

    assert gen4.get("greeting").json() == {"key": "greeting", "value": "hello", "generation": 3}
    assert gen4.put("greeting", "world").status_code == 200
    assert gen4.get("greeting").json() == {"key": "greeting", "value": "world", "generation": 4}
    # S2: repeated after success
    for _ in range(2):
        again = gen4.promote()
        assert (again.status_code, again.json()) == (200, {"result": "Success"})
        skipped = gen4.skip_catchup()
        assert (skipped.status_code, skipped.content) == (204, b"")
    assert gen4.status() == "IsLeader" and gen4.proc.poll() is None


def test_a_write_to_a_fenced_leader_is_refused(demos: Any) -> None:
    data: Path = demos.data
    gen3 = demos(3, NEW, "--fence-interval", "10")  # the write, not the timer, must notice
    gen3.wait_status("IsLeader", {"Initializing"})
    assert gen3.put("k", "v3").status_code == 200
    gen4 = demos(4, NEW)
    gen4.wait_status("ReadyToPromote", {"Initializing"})
    assert gen4.promote().status_code == 200
    gen4.wait_status("IsLeader", {"Promoting"})

    late = gen3.put("k", "lost write")
    assert late.status_code == 503 and late.json()["reason"] == "fenced", late.text
    assert gen3.exit_code() == 0
    assert gen4.get("k").json()["value"] == "v3"
    assert _state(data).read() == LeaderRecord(4, NEW)


def test_s2_initializing_refuses_promote_and_skip_catchup(demos: Any) -> None:
    gen3 = demos(3, NEW)
    gen3.wait_status("IsLeader", {"Initializing"})
    gen4 = demos(4, NEW, "--init-delay", "600")
    assert gen4.info()["phase"] == "Initializing"
    promoted = gen4.promote()
    assert promoted.status_code == 400
    assert "not ready to promote" in promoted.json()["result"]["Failure"]["message"]
    skipped = gen4.skip_catchup()
    assert skipped.status_code == 400 and "initializing" in skipped.json()["message"]
    assert gen4.status() == "Initializing" and gen4.info()["phase"] == "Initializing"
    gen4.proc.terminate()  # SIGTERM: the driver's teardown interrupts the slow open
    assert gen4.exit_code() == 0
    assert gen3.status() == "IsLeader"


def test_s2_catching_up_refuses_promote_and_skip_catchup_ends_it(demos: Any) -> None:
    gen3 = demos(3, NEW)
    gen3.wait_status("IsLeader", {"Initializing"})
    gen4 = demos(4, NEW, "--catchup-delay", "600")
    gen4.wait_phase("CatchingUp")
    assert gen4.status() == "Initializing"
    promoted = gen4.promote()
    assert promoted.status_code == 400 and "Failure" in promoted.json()["result"]
    skipped = gen4.skip_catchup()
    assert (skipped.status_code, skipped.content) == (204, b"")
    assert gen4.status() == "ReadyToPromote"  # catch-up ended with the 204
    assert gen4.skip_catchup().status_code == 204  # no-op in ReadyToPromote
    assert gen4.status() == "ReadyToPromote"
    for _ in range(2):
        again = gen4.promote()
        assert (again.status_code, again.json()) == (200, {"result": "Success"})
    gen4.wait_status("IsLeader", {"Promoting"})
    assert gen3.exit_code() == 0


def test_s3_a_fenced_generation_exits_0_and_writes_nothing(demos: Any) -> None:
    data: Path = demos.data
    _state(data).initialise(4, NEW)
    before = (data / "state.sqlite3").read_bytes()
    gen2 = demos(2, NEW, listen=False)
    assert gen2.exit_code() == 0
    assert gen2.proc.stdout is not None and gen2.proc.stdout.read() == ""  # never listened
    assert "fenced" in gen2.stderr()
    assert (data / "state.sqlite3").read_bytes() == before
    assert sorted(p.name for p in data.iterdir()) == ["state.sqlite3"]


@pytest.mark.parametrize("generation", [2, 4, 5])
def test_s3_an_older_release_is_refused_at_every_generation(demos: Any, generation: int) -> None:
    data: Path = demos.data
    _state(data).initialise(4, NEW)
    before = (data / "state.sqlite3").read_bytes()
    old = demos(generation, OLD, listen=False)
    assert old.exit_code() == 1
    assert old.proc.stdout is not None and old.proc.stdout.read() == ""
    lines = old.stderr().strip().splitlines()
    assert lines[-1].startswith(f"error: shared state {data / 'state.sqlite3'} was written by "
                                f"release {NEW}, newer than this release {OLD}")
    assert (data / "state.sqlite3").read_bytes() == before


def test_a_restarted_leader_boots_as_leader_and_keeps_its_data(demos: Any) -> None:
    gen3 = demos(3, NEW)
    gen3.wait_status("IsLeader", {"Initializing"})
    assert gen3.put("k", "kept").status_code == 200
    gen3.proc.terminate()
    assert gen3.exit_code() == 0
    again = demos(3, NEW)
    again.wait_status("IsLeader", {"Initializing"})
    assert again.get("k").json()["value"] == "kept"


_DIE_MID_WRITE = """
import os, signal, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA cache_size=1")
c.execute("BEGIN IMMEDIATE")
c.execute("UPDATE kv SET value = 'uncommitted'")
c.execute("CREATE TABLE filler (x)")
for _ in range(20000):
    c.execute("INSERT INTO filler VALUES (?)", ("x" * 200,))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_candidate_boots_after_a_leader_died_mid_write(demos: Any) -> None:
    """A hot journal (a writer SIGKILLed mid-transaction) is rolled back, not a boot failure."""
    data: Path = demos.data
    state = _state(data)
    state.initialise(3, NEW)
    with state.transaction(3) as conn:
        conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                     "generation INTEGER NOT NULL)")
        conn.execute("INSERT INTO kv VALUES ('k', 'committed', 3)")
    died = subprocess.run([sys.executable, "-c", _DIE_MID_WRITE, str(data / "state.sqlite3")],
                          check=False, timeout=TIMEOUT)
    assert died.returncode == -9 and (data / "state.sqlite3-journal").exists()
    gen4 = demos(4, NEW)
    gen4.wait_status("ReadyToPromote", {"Initializing"})
    assert gen4.get("k").json()["value"] == "committed"
    assert state.read() == LeaderRecord(3, NEW)


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--fence-interval", "11"], {}, "fence interval 11s is out of range"),
    (["--fence-interval", "soon"], {}, "'soon' is not a number of seconds"),
    ([], {ENV_GENERATION: "x"}, f"{ENV_GENERATION}='x' is not a deploy generation"),
    ([], {ENV_INTERNAL_ADDR: "nowhere"}, f"{ENV_INTERNAL_ADDR} 'nowhere' is not HOST:PORT"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], env: dict[str, str],
                                          message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lockstep.rollout.demo_service", "--data", str(tmp_path / "d"),
         "--release", NEW, "--public-addr", "127.0.0.1:0", *args],
        env=dict(os.environ, **env), capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()  # nothing was initialised


def test_the_service_starts_fast_and_imports_no_heavy_library(tmp_path: Path) -> None:
    env = dict(os.environ, **{ENV_GENERATION: "1", ENV_INTERNAL_ADDR: "127.0.0.1:0"})
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "lockstep.rollout.demo_service",
         "--data", str(tmp_path / "d"), "--release", NEW, "--public-addr", "127.0.0.1:0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        listening = json.loads(proc.stdout.readline())
        with httpx.Client(timeout=10.0) as http:
            deadline = time.monotonic() + TIMEOUT
            while http.get(f"http://{listening['internal']}/api/leader/status").json()[
                    "status"] != "IsLeader":
                assert time.monotonic() < deadline
        elapsed = time.monotonic() - t0
    finally:
        proc.terminate()
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in err.splitlines()
               if line.startswith("import time:")}
    assert "sqlite3" in modules  # the listing is real
    assert not modules & {"pydantic", "sqlalchemy", "httpx", "typer", "rich"}
    assert elapsed < 2.0, f"{elapsed:.3f}s to IsLeader (importtime on; target < 0.5 s without)"

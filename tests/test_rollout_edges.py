"""Rollout edge cases end to end (spec/rollouts.md §5.7, §5.8, §4.6, §2.2 D1b): the rollout
timeout, stateless components updated in place, bad input at the CLI, bad objects in the store,
and v1alpha1 mode. Real demo-service processes; the controller in a thread or a subprocess."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockstep.cli.main import run as cli_run
from lockstep.rollout.hashing import rollout_hash
from lockstep.rollout.plan import ApiMode, Done, Settings
from lockstep.rollout.processes import process_start_time
from lockstep.rollout.reconcile import parse_rfc3339
from lockstep.rollout.store import EnvironmentStore
from tests.test_rollout_controller import ENV, IMAGE, World, _cond, apply, lockstep, spec

MANUAL = "ManuallyPromote"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A workspace whose controller thread the test starts; afterwards every workload of every
    environment is stopped."""
    w = World(tmp_path)
    yield w
    w.stop.set()
    if w.thread.is_alive():
        w.thread.join(60)
    root = w.ws / ".lockstep" / "rollouts"
    for env in sorted(p.name for p in root.iterdir()) if root.is_dir() else []:
        for record in w.driver.records(env):
            w.driver.teardown(env, record["generation"])
        stop_endpoints = getattr(getattr(w.driver, "endpoints", None), "stop_all", None)
        if stop_endpoints is not None:
            stop_endpoints(env)
        assert not w.driver.records(env)


def start(world: World, api: ApiMode = "v1alpha2") -> None:
    """Start the controller thread in API mode `api`."""
    world.controller.settings = Settings(api=api)
    world.thread.start()


def stop(world: World) -> None:
    """Stop the controller thread, so the test can run passes itself."""
    world.stop.set()
    world.thread.join(60)
    assert not world.thread.is_alive()


def poll(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kv(record: dict[str, Any], key: str) -> Any:
    """GET /kv/<key> on a workload's public address."""
    return httpx.get(f"http://{record['public']}/kv/{key}", trust_env=False).json()


def put_kv(record: dict[str, Any], key: str, value: str) -> None:
    """PUT /kv/<key> on a workload's public address (must succeed)."""
    resp = httpx.put(f"http://{record['public']}/kv/{key}", content=value.encode(),
                     trust_env=False)
    assert resp.status_code == 200, resp.text


# --- the rollout timeout (§5.7) -----------------------------------------------------------------


def test_a_parked_rollout_past_its_timeout_is_cancelled(world: World) -> None:
    """ManuallyPromote with rolloutRequestTimeout 5s: the parked candidate is torn down at the
    deadline (measured from Applying), RolloutTimeout says so, generation 1 keeps serving its
    data, and later passes leave the cancelled rollout alone (D2a)."""
    start(world)
    apply(world.ws, spec("1.0", rolloutStrategy=MANUAL, rolloutRequestTimeout="5s"))
    first = world.wait_reason("Applied", 1)
    gen1 = world.generations()[1]
    put_kv(gen1, "k", "v1")

    apply(world.ws, spec("1.1", rolloutStrategy=MANUAL, rolloutRequestTimeout="5s"))
    parked = world.wait_reason("ReadyToPromote", 1)
    candidate = world.generations()[2]
    assert world.driver.alive(candidate)

    cancelled = world.wait_reason("RolloutTimeout", 1)
    cond = _cond(cancelled)
    assert (cond["status"], cond["message"]) == (
        "False", "Cancelled rollout to generation 2 after it exceeded the rollout timeout of 5s")
    started = parse_rfc3339(_cond(parked)["lastTransitionTime"])  # Applying's, carried forward
    ended = parse_rfc3339(cond["lastTransitionTime"])
    assert started is not None and ended is not None
    assert ended - started >= timedelta(seconds=5)
    status = cancelled["status"]
    assert status["requestedRolloutHash"] == parked["status"]["requestedRolloutHash"]
    assert status["lastCompletedRolloutHash"] == first["status"]["lastCompletedRolloutHash"]
    assert status["lastCompletedRelease"] == "1.0"
    assert world.reasons()[-3:] == ["Applying", "ReadyToPromote", "RolloutTimeout"]

    gens = world.generations()
    assert list(gens) == [1] and gens[1]["pid"] == gen1["pid"]
    assert process_start_time(candidate["pid"]) is None, "the cancelled candidate still runs"
    assert world.driver.routes(ENV)["db"]["generation"] == 1
    assert kv(gen1, "k")["value"] == "v1"
    put_kv(gen1, "k", "v2")  # generation 1 still leads

    stop(world)
    rv = world.store.get(ENV).resource_version
    ending, _ = world.controller.run_pass(ENV)
    assert ending == Done()
    assert world.store.get(ENV).resource_version == rv, "a cancelled rollout stays cancelled"
    assert list(world.generations()) == [1]


def test_a_rollout_force_promoted_before_its_deadline_is_not_cancelled(world: World) -> None:
    """`rollout promote --force` on a parked rollout, then the deadline passes (the
    controller's clock jumps 2 h past a 1h timeout) before the promotion runs: the forced
    rollout completes with the same candidate process, never RolloutTimeout."""
    start(world)
    apply(world.ws, spec("1.0", rolloutStrategy=MANUAL, rolloutRequestTimeout="1h"))
    world.wait_reason("Applied", 1)
    put_kv(world.generations()[1], "k", "v1")
    apply(world.ws, spec("1.1", rolloutStrategy=MANUAL, rolloutRequestTimeout="1h"))
    parked = world.wait_reason("ReadyToPromote", 1)
    candidate = world.generations()[2]
    stop(world)

    done = lockstep(world.ws, "rollout", "promote", ENV, "--force")
    assert done.returncode == 0, done.stderr
    world.controller.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    deadline = time.monotonic() + 30
    while _cond(world.status()).get("reason") != "Applied" and time.monotonic() < deadline:
        world.controller.run_pass(ENV)
        assert _cond(world.status())["reason"] != "RolloutTimeout"
        time.sleep(0.05)
    promoted = world.status()
    assert (_cond(promoted)["reason"], promoted["status"]["activeGeneration"]) == ("Applied", 2)
    assert promoted["status"]["lastCompletedRolloutHash"] == \
        parked["status"]["requestedRolloutHash"]
    assert "RolloutTimeout" not in world.reasons()
    gens = world.generations()
    assert list(gens) == [2] and gens[2]["pid"] == candidate["pid"]
    assert kv(gens[2], "k")["value"] == "v1"


# --- stateless components (§5.8) ----------------------------------------------------------------


def stateless_spec(db: str, web: str) -> dict[str, Any]:
    """A stateful `db` and a stateless `web`, both demo services."""
    return {"components": {"db": {"image": f"{IMAGE}:{db}"},
                           "web": {"image": f"{IMAGE}:{web}", "stateless": True}}}


def test_changing_only_a_stateless_component_updates_it_in_place(world: World) -> None:
    """A new `web` image (stateless, outside the hash): no new generation, the rollout status
    keeps its hash and message, generation 1's process is untouched (pid and start time), and
    `web` is replaced by a process running the new release."""
    start(world)
    apply(world.ws, stateless_spec("1.0", "1.0"))
    first = world.wait_reason("Applied", 1)

    def web() -> dict[str, Any] | None:
        return next((r for r in world.driver.records(ENV)
                     if r["component"] == "web" and r.get("internal")), None)

    old_web = poll("web started", web)
    assert old_web["generation"] is None and old_web["name"] == f"{ENV}-web"
    db = world.generations()[1]

    apply(world.ws, stateless_spec("1.0", "1.1"))
    meta_generation = world.status()["metadata"]["generation"]
    assert meta_generation == 2
    after = world.wait("the edit observed",
                       lambda o: o["status"]["observedGeneration"] == meta_generation)
    new_web = poll("web replaced", lambda: (r := web()) and r["pid"] != old_web["pid"] and r)

    assert _cond(after)["reason"] == "Applied" and _cond(after)["message"] == \
        _cond(first)["message"]
    assert after["status"]["activeGeneration"] == 1
    assert after["status"]["lastCompletedRolloutHash"] == \
        first["status"]["lastCompletedRolloutHash"]
    assert world.reasons() == ["Applying", "Promoting", "Applied", "Applied"]
    gens = world.generations()
    assert list(gens) == [1]
    assert (gens[1]["pid"], gens[1]["startTime"]) == (db["pid"], db["startTime"])
    assert process_start_time(db["pid"]) == db["startTime"], "the stateful process restarted"
    assert process_start_time(old_web["pid"]) is None, "the old web process still runs"
    assert new_web["command"][new_web["command"].index("--release") + 1] == "1.1"
    info = httpx.get(f"http://{new_web['public']}/info", trust_env=False).json()
    assert info["release"] == "1.1"


# --- bad input at the CLI -----------------------------------------------------------------------


def _env(spec_: dict[str, Any], **top: Any) -> str:
    return json.dumps({"apiVersion": "lockstep.dev/v1alpha2", "kind": "Environment",
                       "metadata": {"name": ENV}, "spec": spec_, **top})


GOOD = {"components": {"db": {"image": f"{IMAGE}:1.0"}}}
BAD_FILES: list[tuple[str, str, list[str], str]] = [
    # id, file content, extra arguments, expected part of the error line
    ("malformed YAML", "spec: [1\n", [], "malformed YAML"),
    ("malformed JSON", _env(GOOD)[:-1] + ",}", [], "malformed JSON"),
    ("not a mapping", "- a\n", [], "the document is a list, not an object"),
    ("unknown apiVersion", _env(GOOD).replace("v1alpha2", "v9"), [],
     "apiVersion 'lockstep.dev/v9' is not supported"),
    ("other kind", _env(GOOD).replace('"Environment"', '"Pod"'), [], "kind 'Pod'"),
    ("unknown spec field", _env({**GOOD, "colour": "red"}), [], "spec.colour: unknown field"),
    ("unknown top-level field", _env(GOOD, extra=1), [], "extra: unknown field"),
    ("v1alpha1 field in v1alpha2", _env({**GOOD, "requestRollout": str(uuid.uuid4())}), [],
     "spec.requestRollout: unknown field"),
    ("forceRollout not a UUID", _env({**GOOD, "forceRollout": "tuesday"}), [],
     "spec.forceRollout: 'tuesday' is not a UUID"),
    ("requestRollout not a UUID",
     _env({**GOOD, "requestRollout": "r1"}).replace("v1alpha2", "v1alpha1"), [],
     "spec.requestRollout: 'r1' is not a UUID"),
    ("negative timeout", _env({**GOOD, "rolloutRequestTimeout": "-1h"}), [],
     "spec.rolloutRequestTimeout: value '-1h' is not a positive duration"),
    ("unparsable timeout", _env({**GOOD, "rolloutRequestTimeout": "soon"}), [],
     "value 'soon' is not a positive duration"),
    ("timeout a number", _env({**GOOD, "rolloutRequestTimeout": 24}), [],
     "spec.rolloutRequestTimeout: expected a string"),
    ("unknown strategy", _env({**GOOD, "rolloutStrategy": "Sometimes"}), [],
     "spec.rolloutStrategy: Input should be 'WaitUntilReady'"),
    ("component name", _env({"components": {"My_DB": {"image": f"{IMAGE}:1"}}}), [],
     "component name 'My_DB' is not a DNS label"),
    ("both sources", _env({**GOOD, "release": "v2026.11.3"}), [],
     "exactly one of release and components"),
    ("no name", _env(GOOD).replace(f'"name": "{ENV}"', '"labels": {}'), [],
     "metadata.name: missing"),
    ("bad name", _env(GOOD).replace(f'"name": "{ENV}"', '"name": "Shop_1"'), [],
     "'Shop_1' is not a DNS subdomain"),
    ("other API mode", _env({**GOOD, "forceRollout": str(uuid.uuid4())}),
     ["--api", "v1alpha1"], f"environment {ENV} is stored as lockstep.dev/v1alpha2"),
    ("unknown API mode", _env(GOOD), ["--api", "v9"], "'v9' is not one of"),
]


def _rows(ws: Path) -> list[tuple[Any, ...]]:
    """Everything the store holds: objects, statuses and history."""
    with sqlite3.connect(ws / ".lockstep" / "rollouts.db") as db:
        return [*db.execute("SELECT name, generation, resource_version, object, status "
                            "FROM environments ORDER BY name"),
                *db.execute("SELECT * FROM environment_history ORDER BY id")]


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exc:
        cli_run(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _one_error_line(err: str, expected: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert expected in err, err
    assert err.rstrip().endswith(")"), f"no hint: {err}"  # error: <what> (<how to fix>)
    assert "Traceback" not in err


@pytest.mark.parametrize(("text", "args", "expected"), [c[1:] for c in BAD_FILES],
                         ids=[c[0] for c in BAD_FILES])
def test_bad_files_are_refused_and_store_nothing(tmp_path: Path, text: str, args: list[str],
                                                 expected: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`rollout apply` of a bad file: exit 2, one line `error: … (…)`, the stored environment
    of the same name unchanged."""
    good = tmp_path / "good.json"
    good.write_text(_env(GOOD), encoding="utf-8")
    assert invoke(["rollout", "apply", str(good), "-C", str(tmp_path)], capsys)[0] == 0
    before = _rows(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")
    code, out, err = invoke(["rollout", "apply", str(bad), "-C", str(tmp_path), *args], capsys)
    assert (code, out) == (2, "")
    _one_error_line(err, expected)
    assert _rows(tmp_path) == before


def test_other_bad_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty stdin, a missing file, an unknown environment, promote without --force or with
    no rollout in progress, an unknown controller API mode: one line each, nothing stored."""
    ws = str(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    for argv, code, expected in [
        (["rollout", "apply", "-"], 2, "<stdin>: 0 YAML documents"),
        (["rollout", "apply", str(tmp_path / "absent.yaml")], 2, "no such file"),
        (["rollout", "status", "nope"], 2, "no environment 'nope'"),
        (["rollout", "promote", "nope"], 2, "pass --force to confirm"),
        (["controller", "run", "--api", "v1beta1"], 2, "'v1beta1' is not one of"),
    ]:
        got, out, err = invoke([*argv, "-C", ws], capsys)
        assert (got, out) == (code, ""), (argv, err)
        _one_error_line(err, expected)
    good = tmp_path / "good.json"
    good.write_text(_env(GOOD), encoding="utf-8")
    assert invoke(["rollout", "apply", str(good), "-C", ws], capsys)[0] == 0
    before = _rows(tmp_path)
    got, _, err = invoke(["rollout", "promote", ENV, "--force", "-C", ws], capsys)
    assert got == 1
    _one_error_line(err, f"environment {ENV} has no rollout in progress (condition none)")
    assert _rows(tmp_path) == before


# --- bad objects in the store (D1b; the controller never crashes) ------------------------------


def _obj(name: str, spec_: Any, version: str = "lockstep.dev/v1alpha2",
         metadata: Any = None) -> dict[str, Any]:
    return {"apiVersion": version, "kind": "Environment",
            "metadata": {"name": name} if metadata is None else metadata, "spec": spec_}


def _demo(tag: str, **extra: Any) -> dict[str, Any]:
    return {"components": {"db": {"image": f"{IMAGE}:{tag}"}}, **extra}


UNKNOWN_IMAGE = {"components": {"db": {"image": "example/web:1"}}}
NO_COMMAND = "Failed to apply changes for generation 1: image 'example/web:1' has no local command"
# name → (object column, status column, the UpToDate message expected; None: not writable)
BAD_ROWS: dict[str, tuple[str, str | None, str | None]] = {
    "both": (json.dumps(_obj("both", {**UNKNOWN_IMAGE, "release": "v2026.11.3"})), None,
             "Invalid spec: spec: exactly one of release and components must be set"),
    "specless": (json.dumps(_obj("specless", "everything")), None,
                 "Invalid spec: spec: expected a mapping"),
    "badmeta": (json.dumps(_obj("badmeta", UNKNOWN_IMAGE, metadata="badmeta")), None,
                "Invalid spec: metadata: expected a mapping"),
    "oldversion": (json.dumps(_obj("oldversion", {**UNKNOWN_IMAGE,
                                                  "requestRollout": str(uuid.uuid4())},
                                   version="lockstep.dev/v1alpha1")), None,
                   NO_COMMAND),  # migrated to v1alpha2 at startup (§4.6), then reconciled
    "wrongstatus": (json.dumps(_obj("wrongstatus", UNKNOWN_IMAGE)), json.dumps([1, "two"]),
                    NO_COMMAND),
    "garbledstatus": (json.dumps(_obj("garbledstatus", UNKNOWN_IMAGE)), "{not json",
                      NO_COMMAND),
    "badtimeout": (json.dumps(_obj("badtimeout", _demo("1.0", rolloutRequestTimeout="-5m"))),
                   None, "Successfully applied changes for generation 1"),
    "garbage": ("{not json", None, None),
    "notobject": ("[1, 2]", None, None),
}


def _insert_bad_rows(ws: Path) -> None:
    """Write BAD_ROWS straight into the store, as a hand edit or an old lockstep would."""
    EnvironmentStore(ws / ".lockstep" / "rollouts.db")  # the schema
    with sqlite3.connect(ws / ".lockstep" / "rollouts.db") as db:
        db.executemany("INSERT INTO environments VALUES (?, 1, 1, ?, ?, 0)",
                       [(name, obj, status) for name, (obj, status, _) in BAD_ROWS.items()])


def _raw(ws: Path, name: str) -> tuple[Any, ...]:
    with sqlite3.connect(ws / ".lockstep" / "rollouts.db") as db:
        row = db.execute("SELECT resource_version, object, status FROM environments "
                         "WHERE name = ?", (name,)).fetchone()
    return tuple(row)


def _check_bad_rows(world: World, once: bool = False) -> None:
    """Each writable bad object has the status condition it deserves; the others are as they
    were written. After `--once` the valid one (badtimeout) may still be Applying."""
    for name, (obj, status, message) in BAD_ROWS.items():
        if once and name == "badtimeout":
            continue
        if message is None:
            assert _raw(world.ws, name) == (1, obj, status), name
            continue
        stored = world.store.get(name).status
        assert isinstance(stored, dict), (name, stored)
        cond = _cond({"status": stored})
        assert str(cond.get("message", "")).startswith(message), (name, stored)
        expected = "Applied" if name == "badtimeout" else "FailedDeploy"
        assert cond["reason"] == expected, (name, stored)


def test_the_controller_survives_bad_objects_in_the_store(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Invalid objects beside a good one: `controller run --once` and the looping controller
    report each in its status condition where one can be written, log one line where it
    cannot, and go on reconciling the good environment; a rewritten object is picked up."""
    _insert_bad_rows(world.ws)
    apply(world.ws, spec("1.0"))
    once = lockstep(world.ws, "controller", "run", "--once")
    assert once.returncode == 0, once.stderr
    assert "Traceback" not in once.stderr and " ERROR " not in once.stderr, once.stderr
    lines = once.stderr.splitlines()
    for name in ("garbage", "notobject"):
        mine = [line for line in lines if f" {name}: " in line]
        assert len(mine) == 1 and "pass failed" in mine[0], mine
    assert "garbage: pass failed (environment 'garbage' is stored unreadable: " in once.stderr
    assert "notobject: pass failed (the stored Environment is not a JSON object)" in once.stderr
    assert any("badtimeout: rolloutRequestTimeout '-5m' is not a positive duration" in line
               and line.endswith("; using 24h") for line in lines), once.stderr
    _check_bad_rows(world, once=True)
    assert _cond(world.status())["reason"] in ("Applying", "Applied")  # --once stops waiting

    caplog.set_level(logging.INFO, logger="lockstep.rollout")
    start(world)
    apply(world.ws, spec("1.1"))
    world.wait_reason("Applied", 2)
    assert world.thread.is_alive()
    _check_bad_rows(world)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert any(" garbage" in f" {r.getMessage()}" and "stored unreadable" in r.getMessage()
               for r in caplog.records), caplog.text

    repaired = world.ws / "garbage.json"
    repaired.write_text(json.dumps(_obj("garbage", UNKNOWN_IMAGE)), encoding="utf-8")
    done = lockstep(world.ws, "rollout", "apply", str(repaired))
    assert done.returncode == 0, done.stderr
    fixed = poll("the repaired object reconciled", lambda: (
        isinstance(s := world.store.get("garbage").status, dict)
        and _cond({"status": s}).get("reason") == "FailedDeploy" and s))
    assert _cond({"status": fixed})["message"].startswith(NO_COMMAND)
    shown = lockstep(world.ws, "rollout", "status", "wrongstatus")
    assert shown.returncode == 0 and "FailedDeploy" in shown.stdout, shown.stderr


def test_status_of_a_garbled_object(tmp_path: Path) -> None:
    """`rollout status` of objects a hand edit garbled: one line, never a traceback."""
    _insert_bad_rows(tmp_path)
    shown = lockstep(tmp_path, "rollout", "status", "wrongstatus")
    assert shown.returncode == 0, shown.stderr
    assert "unreadable (the controller recreates it)" in shown.stdout
    garbage = lockstep(tmp_path, "rollout", "status", "garbage")
    assert garbage.returncode == 1 and "Traceback" not in garbage.stderr
    assert garbage.stderr.startswith("error: environment 'garbage' is stored unreadable: ")
    promote = lockstep(tmp_path, "rollout", "promote", "specless", "--force")
    assert promote.returncode == 1 and "has no readable spec" in promote.stderr


# --- v1alpha1 mode (§4.6) -----------------------------------------------------------------------


def apply_v1(ws: Path, tag: str, request: str | None = None, **extra: Any) -> None:
    """`rollout apply --api v1alpha1` of a v1alpha1 Environment named ENV."""
    body = {"components": {"db": {"image": f"{IMAGE}:{tag}"}}, **extra}
    if request is not None:
        body["requestRollout"] = request
    path = ws / "env-v1.json"
    path.write_text(json.dumps({"apiVersion": "lockstep.dev/v1alpha1", "kind": "Environment",
                                "metadata": {"name": ENV}, "spec": body}), encoding="utf-8")
    done = lockstep(ws, "rollout", "apply", "--api", "v1alpha1", str(path))
    assert done.returncode == 0, done.stderr
    assert "stored as lockstep.dev/v1alpha1" in done.stderr


def test_v1alpha1_mode_end_to_end(world: World) -> None:
    """`controller run --api v1alpha1`: a nil requestRollout is filled with a UUIDv4; a rollout
    records its request on the generation and in lastCompletedRolloutRequest; a spec change
    without a new request waits for approval; a new request rolls out, parks (ManuallyPromote)
    and `rollout promote --force` promotes it; the data survives."""
    apply_v1(world.ws, "1.0", rolloutStrategy=MANUAL)
    once = lockstep(world.ws, "controller", "run", "--api", "v1alpha1", "--once")
    assert once.returncode == 0, once.stderr
    filled = world.status()
    assert filled["apiVersion"] == "lockstep.dev/v1alpha1" and "status" not in filled
    r1 = filled["spec"]["requestRollout"]
    assert uuid.UUID(r1).version == 4

    start(world, "v1alpha1")
    first = world.wait_reason("Applied", 1)
    status = first["status"]
    assert status["lastCompletedRolloutRequest"] == r1
    assert status["resourcesHash"] == rollout_hash(first)
    assert "requestedRolloutHash" not in status and "lastCompletedRolloutHash" not in status
    gen1 = world.generations()[1]
    assert gen1["request"] == r1
    put_kv(gen1, "k", "v1")

    apply_v1(world.ws, "1.1", r1, rolloutStrategy=MANUAL)
    waiting = world.wait_reason("WaitingForApproval", 1)
    assert _cond(waiting)["message"] == "Changes detected, waiting for approval for generation 2"
    assert list(world.generations()) == [1]

    r2 = str(uuid.uuid4())
    apply_v1(world.ws, "1.1", r2, rolloutStrategy=MANUAL)
    parked = world.wait_reason("ReadyToPromote", 1)
    assert parked["status"]["resourcesHash"] == rollout_hash(parked)
    assert world.generations()[2]["request"] == r2
    done = lockstep(world.ws, "rollout", "promote", ENV, "--force")
    assert done.returncode == 0, done.stderr
    assert world.status()["spec"]["forcePromote"] == r2
    promoted = world.wait_reason("Applied", 2)
    status = promoted["status"]
    assert status["lastCompletedRolloutRequest"] == r2
    assert status["resourcesHash"] == rollout_hash(promoted)
    assert status["lastCompletedRelease"] == "1.1"
    gens = world.generations()
    assert list(gens) == [2] and gens[2]["request"] == r2
    assert kv(gens[2], "k")["value"] == "v1"
    assert world.reasons() == ["Applying", "Promoting", "Applied", "WaitingForApproval",
                               "Applying", "ReadyToPromote", "Promoting", "Applied"]

    shown = lockstep(world.ws, "rollout", "status", ENV)
    assert f"requested rollout:  {r2}" in shown.stdout
    assert f"completed request:  {r2}" in shown.stdout
    assert "lockstep.dev/v1alpha1" in shown.stdout
    as_v2 = lockstep(world.ws, "rollout", "status", ENV, "--api", "v1alpha2", "--json")
    view = json.loads(as_v2.stdout)
    assert view["apiVersion"] == "lockstep.dev/v1alpha2"
    assert view["status"]["lastCompletedRolloutHash"] == status["resourcesHash"]

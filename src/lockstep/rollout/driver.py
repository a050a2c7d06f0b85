"""What the controller acts through (spec/rollouts.md §2.6): the `Driver` protocol and
`LocalDriver`, which runs each generation's components as local processes.

LocalDriver keeps everything under `<workspace>/.lockstep/rollouts/<env>/`: `workloads/<name>.json`
(one durable record per process: pid, start time, addresses, labels), `logs/<name>.log`,
`state/<component>/` (the component's shared data), `routes.json` (where each stable endpoint
forwards) and `endpoints/<env>-<c>.json` (the endpoint processes, lockstep.rollout.endpoint).
A restarted controller re-observes live workloads from the records. Linux: liveness compares the
pid's start time in /proc with the recorded one, so a reused pid is never mistaken for a workload.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx

from lockstep import faults
from lockstep.errors import LockstepError
from lockstep.manifest import DEFAULT_CONFIGURATION
from lockstep.rollout.endpoint import Endpoints
from lockstep.rollout.hashing import canonical_json, rollout_hash
from lockstep.rollout.plan import ApplyStateless, Generation, LeaderStatus, Observed
from lockstep.rollout.processes import (
    announcement,
    last_line,
    process_start_time,
    spawn,
    stop_group,
)
from lockstep.rollout.release_source import Release, ReleaseSource, command_line

log = logging.getLogger("lockstep.rollout.driver")

LEADER_TIMEOUT = 10.0  # seconds a leader-status call may take before it counts as unreachable
BOOT_TIMEOUT = 30.0  # seconds Apply waits for a new process to announce its listeners
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL on teardown
DEMO_REPOSITORY_SUFFIX = "demo-service"
_STATUSES = ("Initializing", "ReadyToPromote", "Promoting", "IsLeader")


class DriverError(LockstepError):
    """A workload could not be created or changed; the message names it and why."""


class SkipCatchupRefused(DriverError):
    """skip-catchup did not answer 204; the message is the service's reason."""


class Driver(Protocol):
    """The executor's hands (§5.1): observe the workloads and change them, one step at a time."""

    def observe(self, env: str, obj: dict[str, Any]) -> Observed:
        """The existing generations of `env` and the leader status of candidate N's components."""
        ...

    def apply(self, env: str, obj: dict[str, Any], generation: int) -> None:
        """Create generation `generation` from the object's spec; idempotent."""
        ...

    def teardown(self, env: str, generation: int) -> None:
        """Delete generation `generation`; returns only when nothing of it is left."""
        ...

    def skip_catchup(self, env: str, generation: int, component: str) -> None:
        """POST skip-catchup; raises SkipCatchupRefused unless it answers 204."""
        ...

    def promote(self, env: str, generation: int, component: str) -> bool:
        """POST promote; True only on 200 `{"result": "Success"}`."""
        ...

    def route(self, env: str, generation: int) -> None:
        """Point each component's stable endpoint `<env>-<c>` at generation `generation`."""
        ...

    def apply_stateless(self, env: str, step: ApplyStateless) -> None:
        """Create, update in place or delete the stateless workloads."""
        ...


def image_command(image: str, data: Path) -> tuple[list[str], str]:
    """The command line and release of a component image (the first slice's only rule): an image
    whose repository ends in `demo-service` runs lockstep's demo service with `--release <tag>`."""
    ref = image.split("@", 1)[0]
    repository, tag = ref, "latest"
    if ":" in ref.rsplit("/", 1)[-1]:
        repository, tag = ref.rsplit(":", 1)
    if not repository.endswith(DEMO_REPOSITORY_SUFFIX):
        raise DriverError(f"image {image!r} has no local command",
                          f"the local driver runs images whose repository ends in "
                          f"{DEMO_REPOSITORY_SUFFIX!r} (see docs/rollouts-controller.md)")
    return ([sys.executable, "-m", "lockstep.rollout.demo_service", "--data", str(data),
             "--release", tag, "--public-addr", "127.0.0.1:0"], tag)


class LocalDriver:
    """Each workload is a process in its own session (so it outlives the controller), started
    with a minimal environment: PATH, LC_ALL, LOCKSTEP_DEPLOY_GENERATION, LOCKSTEP_INTERNAL_ADDR
    and the component's `env`."""

    def __init__(self, workspace: Path, internal_host: str = "127.0.0.1") -> None:
        self.root = workspace / ".lockstep" / "rollouts"
        self.internal_host = internal_host
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._http = httpx.Client(timeout=LEADER_TIMEOUT, trust_env=False)
        self.releases = ReleaseSource(workspace, self.root)  # release mode (spec.release)
        self.endpoints = Endpoints(self.root, process_start_time)

    def close(self) -> None:
        """Close the HTTP client and reap exited children (the workloads keep running)."""
        self._http.close()
        self.endpoints.close()
        for proc in self._children.values():
            proc.poll()

    # --- records ------------------------------------------------------------------------------

    def env_dir(self, env: str) -> Path:
        """Where one environment's records, logs, state and routes live."""
        return self.root / env

    def _record_path(self, env: str, name: str) -> Path:
        return self.env_dir(env) / "workloads" / f"{name}.json"

    def records(self, env: str) -> list[dict[str, Any]]:
        """Every workload record of `env`, addresses filled in from the log once announced."""
        out = []
        for path in sorted((self.env_dir(env) / "workloads").glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a record being replaced; the next pass sees it
            if record.get("internal") is None:
                self._fill_addresses(env, record)
            out.append(record)
        return out

    def _write_record(self, env: str, record: dict[str, Any]) -> None:
        path = self._record_path(env, str(record["name"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def _fill_addresses(self, env: str, record: dict[str, Any]) -> bool:
        """Read the process's `listening` line from its log; True once the addresses are known."""
        event = announcement(record["log"], int(record.get("logOffset", 0)))
        if event is None:
            return False
        record["internal"], record["public"] = event.get("internal"), event.get("public")
        self._write_record(env, record)
        return True

    def alive(self, record: Mapping[str, Any]) -> bool:
        """Whether the recorded process still runs (same pid and start time, not a zombie)."""
        pid = int(record["pid"])
        proc = self._children.get(pid)
        if proc is not None and proc.poll() is not None:
            return False
        return process_start_time(pid) == record.get("startTime")

    # --- observing ----------------------------------------------------------------------------

    def leader_status(self, record: Mapping[str, Any]) -> LeaderStatus:
        """GET /api/leader/status on the workload; `unreachable` on any error."""
        if not record.get("internal") or not self.alive(record):
            return "unreachable"
        try:
            resp = self._http.get(f"http://{record['internal']}/api/leader/status")
            status = resp.json().get("status") if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return "unreachable"
        return status if status in _STATUSES else "unreachable"

    def observe(self, env: str, obj: dict[str, Any]) -> Observed:
        """The generations whose records exist (ready = every process alive and answering its
        status endpoint) and the leader statuses of candidate N = activeGeneration + 1."""
        status = obj.get("status")
        active = status.get("activeGeneration") if isinstance(status, dict) else None
        candidate = (active if isinstance(active, int) else 0) + 1
        by_generation: dict[int, list[dict[str, Any]]] = {}
        for record in self.records(env):
            if isinstance(record.get("generation"), int):
                by_generation.setdefault(record["generation"], []).append(record)
        generations, leaders = [], {}
        for number, records in sorted(by_generation.items()):
            statuses = {str(r["component"]): self.leader_status(r) for r in records}
            if number == candidate:
                leaders = statuses
            first = records[0]
            generations.append(Generation(
                number, first.get("rolloutHash"), first.get("release"), first.get("request"),
                ready=all(s != "unreachable" for s in statuses.values())))
        return Observed(generations=tuple(generations), leaders=leaders)

    # --- changing -----------------------------------------------------------------------------

    def apply(self, env: str, obj: dict[str, Any], generation: int) -> None:
        """Start every stateful component of `generation` not already running (a dead one is
        restarted, after reporting once how it ended if this driver started it)."""
        components = _components(obj, self.releases)
        h = rollout_hash(obj)
        wanted = {c: spec for c, spec in components.items() if spec.get("stateless") is not True}
        if not wanted and "release" in (obj.get("spec") or {}):
            raise DriverError(f"release {obj['spec']['release']} deploys no stateful component",
                              "a generation needs one: give a component a deploy table without "
                              "stateless = true")
        existing = {str(r["component"]): r for r in self.records(env)
                    if r.get("generation") == generation}
        for component, record in existing.items():
            if component not in wanted:
                self._stop(env, record)
        for component, spec in sorted(wanted.items()):
            name = f"{env}-{component}-{generation}"
            old = existing.get(component)
            if old is not None and self.alive(old):
                continue
            if old is not None:
                self._forget(env, old, report=True)
            self._start(env, name, component, spec, generation,
                        {"rolloutHash": h, "release": None,
                         "request": (obj.get("spec") or {}).get("requestRollout")})

    def teardown(self, env: str, generation: int) -> None:
        """Stop every process of `generation` (SIGTERM, then SIGKILL) and drop its records."""
        for record in self.records(env):
            if record.get("generation") == generation:
                self._stop(env, record)

    def skip_catchup(self, env: str, generation: int, component: str) -> None:
        """POST /api/leader/skip-catchup; 204 or SkipCatchupRefused(the service's message)."""
        resp = self._post(env, generation, component, "skip-catchup")
        if resp is None or resp.status_code != 204:
            raise SkipCatchupRefused(_message(resp), None)

    def promote(self, env: str, generation: int, component: str) -> bool:
        """POST /api/leader/promote; True only on 200 `{"result": "Success"}`."""
        resp = self._post(env, generation, component, "promote")
        if resp is None or resp.status_code != 200:
            log.info("%s-%s-%d: promote failed: %s", env, component, generation, _message(resp))
            return False
        try:
            return bool(resp.json() == {"result": "Success"})
        except ValueError:
            return False

    def route(self, env: str, generation: int) -> None:
        """Point each stable endpoint at `generation`: routes.json then names its workloads (and
        the live stateless ones), and an endpoint process serves each routed component."""
        self._publish_routes(env, generation)

    def endpoint(self, env: str, component: str) -> str | None:
        """The stable HOST:PORT of `<env>-<component>`, None until its endpoint has started."""
        return self.endpoints.address(env, component)

    def _publish_routes(self, env: str, generation: int | None) -> None:
        """Rewrite routes.json (only if it changed): the stateful components of `generation`
        (None: keep the stateful routes), and every stateless workload not routed statefully;
        then make the endpoint processes exactly the routed components."""
        old = self.routes(env)
        records = self.records(env)
        if generation is None:
            routes = {c: r for c, r in old.items()
                      if isinstance(r, dict) and r.get("generation") is not None}
        else:
            routes = {str(r["component"]): _route(env, r) for r in records
                      if r.get("generation") == generation}
        for record in records:
            if record.get("generation") is None and self.alive(record):
                routes.setdefault(str(record["component"]), _route(env, record))
        if routes != old:
            path = self.env_dir(env) / "routes.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(routes, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        self.endpoints.sync(env, sorted(routes))

    def routes(self, env: str) -> dict[str, Any]:
        """The stable endpoints of `env`: component → workload, generation and addresses."""
        try:
            value = json.loads((self.env_dir(env) / "routes.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def apply_stateless(self, env: str, step: ApplyStateless) -> None:
        """Stateless workloads `<env>-<c>`: started, replaced when their component changed, and
        stopped when gone from the spec (release mode: from the release `step.release`, none
        before the first promotion)."""
        wanted = {c: dict(s) for c, s in (step.components or {}).items()}
        if step.components is None and step.release is not None:
            wanted = {c: s for c, s in _components({"spec": {"release": step.release}},
                                                   self.releases).items() if s["stateless"]}
        for record in self.records(env):
            if record.get("generation") is not None:
                continue
            spec = wanted.get(str(record["component"]))
            if spec is None or record.get("config") != _config(spec) or not self.alive(record):
                self._stop(env, record)
            else:
                del wanted[str(record["component"])]
        for component, spec in sorted(wanted.items()):
            self._start(env, f"{env}-{component}", component, spec, None, {})
        self._publish_routes(env, None)  # stateless endpoints; heals dead endpoints

    # --- processes ----------------------------------------------------------------------------

    def start_workload(self, env: str, name: str, component: str, spec: Mapping[str, Any],
                       generation: int | None, labels: dict[str, Any], *,
                       wait: bool = True) -> dict[str, Any]:
        """Start one workload of `env` outside a rollout (upgrade scenarios): gated, recorded
        and logged exactly as `apply` does; `wait=False` returns once it runs its command, for a
        process that may exit before it listens. Returns its record."""
        return self._start(env, name, component, spec, generation, labels, wait=wait)

    def exit_status(self, record: Mapping[str, Any]) -> int | None:
        """The exit status of a workload this driver started, once it has exited; None while it
        runs, or when another driver started it."""
        proc = self._children.get(int(record["pid"]))
        if proc is None:
            return None
        status = proc.poll()
        if status is None and process_start_time(proc.pid) is None:
            # A zombie whose other threads are still exiting cannot be reaped yet, although
            # /proc (and so alive()) already says it is gone: wait the moment it takes.
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = proc.wait(STOP_TIMEOUT)
        return status

    def kill(self, env: str, record: Mapping[str, Any]) -> int | None:
        """SIGKILL the workload's process group at once (a crash, not a stop), wait until it is
        gone and drop its record; its exit status when this driver started it."""
        pid = int(record["pid"])
        if self.alive(record):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT
            while self.alive(record):
                if time.monotonic() > deadline:
                    raise DriverError(f"{record['name']} (pid {pid}) survived SIGKILL",
                                      "stop it by hand")
                time.sleep(0.01)
        proc = self._children.pop(pid, None)
        self._record_path(env, str(record["name"])).unlink(missing_ok=True)
        return None if proc is None else proc.wait()

    def forget(self, env: str, record: Mapping[str, Any]) -> int | None:
        """Drop the record of a workload that has exited; its exit status if this driver
        started it."""
        self._record_path(env, str(record["name"])).unlink(missing_ok=True)
        proc = self._children.pop(int(record["pid"]), None)
        return None if proc is None else proc.wait()

    def _start(self, env: str, name: str, component: str, spec: Mapping[str, Any],
               generation: int | None, labels: dict[str, Any], *,
               wait: bool = True) -> dict[str, Any]:
        """Spawn one workload, record it durably, and (with `wait`) wait until it announces its
        listeners."""
        data = self.env_dir(env) / "state" / component
        data.mkdir(parents=True, exist_ok=True)
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
                   "LOCKSTEP_INTERNAL_ADDR": f"{self.internal_host}:0"}
        if isinstance(spec.get("release"), str):  # release mode: the component's own files
            resolved = self._release_of(spec)
            tree = self.releases.tree(env, resolved, component)
            command, release = command_line(resolved.components[component], tree), resolved.tag
            environ |= {"LOCKSTEP_RELEASE": release, "LOCKSTEP_COMPONENT_DIR": str(tree)}
            labels = labels | {"release": release}
        else:
            command, release = image_command(str(spec.get("image")), data)
            command += [str(a) for a in spec.get("args") or []]
        if generation is not None:
            environ["LOCKSTEP_DEPLOY_GENERATION"] = str(generation)
        environ |= {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
        log_path = self.env_dir(env) / "logs" / f"{name}.log"
        spawned = spawn(command, env=environ, cwd=data, log_path=log_path)
        proc = spawned.proc
        self._children[proc.pid] = proc
        record: dict[str, Any] = {
            "name": name, "environment": env, "component": component, "generation": generation,
            "pid": proc.pid, "startTime": process_start_time(proc.pid), "log": str(log_path),
            "logOffset": spawned.log_offset, "internal": None, "public": None, "command": command,
            "config": _config(spec),
            "labels": {"lockstep.dev/environment": env, "lockstep.dev/component": component,
                       "lockstep.dev/generation": generation}}
        record |= labels
        if generation is not None:
            record["release"] = release
        if record.get("release") is not None:
            record["labels"]["lockstep.dev/release"] = record["release"]
        faults.crashpoint("rollout-before-record")
        try:
            self._write_record(env, record)
        except BaseException:
            spawned.abort()
            raise
        spawned.go()
        log.info("started %s (pid %d): %s", name, proc.pid, " ".join(command))
        if not wait:
            return record
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not self._fill_addresses(env, record):
            if proc.poll() is not None:
                self._forget(env, record, report=True)
                raise DriverError(f"{name} exited before announcing its listeners",
                                  f"see its log {log_path}")
            if time.monotonic() > deadline:
                self._stop(env, record)
                raise DriverError(f"{name} did not announce its listeners within "
                                  f"{BOOT_TIMEOUT:.0f} s", f"see its log {log_path}")
            time.sleep(0.02)
        return record

    def _release_of(self, spec: Mapping[str, Any]) -> Release:
        """The release a release-mode entry runs: its tag, or, with `manifest` (a candidate not
        tagged yet), that manifest file labelled with `release`; in the entry's `configuration`
        (default `default`)."""
        configuration = str(spec.get("configuration") or DEFAULT_CONFIGURATION)
        manifest = spec.get("manifest")
        if isinstance(manifest, str):
            return self.releases.resolve_manifest(Path(manifest), version=str(spec["release"]),
                                                  configuration=configuration)
        return self.releases.resolve(str(spec["release"]), configuration)

    def _forget(self, env: str, record: dict[str, Any], *, report: bool) -> None:
        """Drop the record of a process that ended; raise how it ended if this driver saw it."""
        self._record_path(env, str(record["name"])).unlink(missing_ok=True)
        proc = self._children.pop(int(record["pid"]), None)
        if report and proc is not None and proc.returncode not in (None, 0):
            raise DriverError(f"{record['name']} exited with status {proc.returncode}: "
                              f"{last_line(Path(record['log']), int(record['logOffset']))}",
                              f"see its log {record['log']}")

    def _stop(self, env: str, record: dict[str, Any]) -> None:
        """Stop the workload's process group and wait until it is gone; drop its record."""
        pid = int(record["pid"])
        if not stop_group(pid, lambda: self.alive(record), STOP_TIMEOUT):
            raise DriverError(f"{record['name']} (pid {pid}) survived SIGKILL",
                              "stop it by hand; the next pass retries")
        proc = self._children.pop(pid, None)
        if proc is not None:
            proc.wait()
        faults.crashpoint("rollout-teardown-stopped")
        self._record_path(env, str(record["name"])).unlink(missing_ok=True)
        log.info("stopped %s (pid %d)", record["name"], pid)

    def _post(self, env: str, generation: int, component: str,
              endpoint: str) -> httpx.Response | None:
        """POST one leader endpoint of a component of `generation`; None if unreachable."""
        record = next((r for r in self.records(env) if r.get("generation") == generation
                       and r.get("component") == component), None)
        if record is None:
            return None
        return self.post_leader(record, endpoint)

    def post_leader(self, record: Mapping[str, Any], endpoint: str) -> httpx.Response | None:
        """POST /api/leader/<endpoint> on one workload; None if it is unreachable."""
        if not record.get("internal"):
            return None
        try:
            return self._http.post(f"http://{record['internal']}/api/leader/{endpoint}")
        except httpx.HTTPError:
            return None


def _components(obj: Mapping[str, Any], releases: ReleaseSource) -> dict[str, dict[str, Any]]:
    """The spec's components, or in release mode the deployed components of `spec.release`
    (resolved through its frozen manifest): each with `release`, `source` (its pin), `command`,
    `args`, `env` and `stateless`."""
    spec = obj.get("spec") or {}
    components = spec.get("components")
    if isinstance(components, dict):
        return {str(c): dict(s) for c, s in components.items() if isinstance(s, dict)}
    tag = spec.get("release")
    if not isinstance(tag, str):
        raise DriverError("the spec names neither a release nor components",
                          "set spec.release or spec.components")
    return release_entries(releases.resolve(tag))


def release_entries(release: Release, *, manifest: Path | None = None,
                    configuration: str | None = None) -> dict[str, dict[str, Any]]:
    """The release-mode entries `LocalDriver` starts for `release`'s deployed components: each
    with `release`, `source` (its pin), `command`, `args`, `env` and `stateless`; `manifest`
    (a candidate resolved by `ReleaseSource.resolve_manifest`) and `configuration` are added
    when given, so the driver resolves the same release again."""
    extra: dict[str, Any] = {}
    if manifest is not None:
        extra["manifest"] = str(manifest)
    if configuration is not None:
        extra["configuration"] = configuration
    return {name: {"release": release.tag, "source": c.source_key,
                   "command": list(c.deploy.command), "args": list(c.deploy.args),
                   "env": dict(c.deploy.env), "stateless": c.deploy.stateless, **extra}
            for name, c in release.components.items()}


def _route(env: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The routes.json entry of a workload: the endpoint's name and where it forwards."""
    return {"endpoint": f"{env}-{record['component']}", "workload": record["name"],
            "generation": record.get("generation"), "public": record.get("public"),
            "internal": record.get("internal")}


def _config(spec: Mapping[str, Any]) -> str:
    """What decides whether a stateless workload must be replaced: its image, args and env (in
    release mode its pin and deploy table, not the release tag)."""
    keys = ("source", "command", "args", "env") if "source" in spec else ("image", "args", "env")
    return canonical_json({k: spec.get(k) for k in keys}).decode("utf-8")


def _message(resp: httpx.Response | None) -> str:
    """The reason a leader endpoint gave (the body's message), or why there was none."""
    if resp is None:
        return "the service is unreachable"
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}"
    if isinstance(body, dict):
        failure = body.get("result")
        if isinstance(failure, dict):
            body = failure.get("Failure") or {}
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return str(body["message"])
    return f"HTTP {resp.status_code}"

"""`LocalExecutor` (spec §3, §4, §8): runs a scenario's actions as real processes through the
rollout's `LocalDriver` — the same gated spawn, records, logs, status and promote calls as a
rollout — in one driver environment per run whose shared state every instance uses.

An *instance* is the set of processes (one per component) that one Start launched; the executor
holds each instance's version and generation, restarts read-only processes that exit non-zero,
and turns an exit no action caused into a failure at the next action boundary.
"""

from __future__ import annotations

import random
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lockstep.rollout.driver import LocalDriver
from lockstep.scenarios.actions import (
    Configure,
    Kill,
    PhaseAction,
    Promote,
    Start,
    WaitReady,
)
from lockstep.scenarios.check import CheckRun, Phase, StepContext
from lockstep.scenarios.errors import CheckStepFailure, InfrastructureError
from lockstep.scenarios.phases import PhaseSteps
from lockstep.scenarios.plugin import Plugin
from lockstep.scenarios.report import (
    ActionFailure,
    ActionLog,
    LifecycleError,
    RunLogs,
    UnexpectedExit,
    error_text,
    now,
    tail,
)
from lockstep.scenarios.settings import ScenarioSettings
from lockstep.scenarios.steps import KILL_GRACE, run_step, seconds, step_logger

if TYPE_CHECKING:
    from lockstep.scenarios.scenario import PlanEntry, RunInfo

__all__ = ["Catalog", "InfrastructureError", "Instance", "LocalExecutor", "Timing"]


class Catalog(Protocol):
    """What a version runs: component → exactly the entry `LocalDriver` starts (a
    components-mode `{"image", "args", "env", "stateless"}` or a release-mode entry, see
    `lockstep.rollout.driver.release_entries`). `version` None is the target."""

    def components(self, version: str | None) -> dict[str, dict[str, Any]]:
        """The components of `version`."""
        ...


@dataclass(frozen=True)
class Timing:
    """The executor's fixed waits (spec defaults); tests shorten them."""

    poll_interval: float = 1.0   # WaitReady/Promote: one status poll and progress line per interval
    fast_poll: float = 0.05      # Start's waits, refusal and fencing waits
    watch_interval: float = 0.1  # the background watch for exits and read-only restarts
    exit_timeout: float = 60.0   # refusal Starts and Promote(fences): time to exit by themselves
    kill_grace: float = KILL_GRACE  # argv step: SIGTERM → SIGKILL


@dataclass(eq=False)
class Process:
    """One component's process of an instance (with its earlier incarnations after restarts)."""

    instance: str
    component: str
    spec: dict[str, Any]
    stateful: bool
    record: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)
    done: bool = False       # exited and not restarted
    expected: bool = False   # an action caused (or allows) its exit

    @property
    def label(self) -> str:
        """`<instance>/<component>`, as messages name a process."""
        return f"{self.instance}/{self.component}"

    @property
    def status(self) -> int | None:
        """The last exit status, None while it runs."""
        return self.exits[-1] if self.done and self.exits else None

    def tail(self) -> str:
        """The last 20 lines of its current incarnation's log, indented."""
        lines = tail(self.record["log"], int(self.record.get("logOffset", 0)))
        return "\n".join([f"  last lines of {self.label}:", *(f"    {ln}" for ln in lines)])


@dataclass(eq=False)
class Instance:
    """A named set of processes at one version and deploy generation (spec §1)."""

    name: str
    version: str | None = None       # set by a plain Start and by a Promote
    generation: int | None = None
    led: bool = False                # whether version/generation were ever set
    started_version: str | None = None
    started_generation: int = 0
    read_only: bool = False          # restart policy of a read-only Start
    refusal: bool = False            # a refusal Start: its exits are its Start's business
    processes: dict[str, Process] = field(default_factory=dict)

    def live(self) -> list[Process]:
        """Processes that have not exited (restarted ones count as running)."""
        return [p for p in self.processes.values() if not p.done]

    def stateful(self) -> list[Process]:
        """Its stateful processes, by component name."""
        return [p for _, p in sorted(self.processes.items()) if p.stateful]


class LocalExecutor:
    """Runs actions against instances of local processes (the `Executor` protocol)."""

    def __init__(self, *, workspace: Path, run_dir: Path, catalog: Catalog, plugin: Plugin,
                 settings: ScenarioSettings, parallel: bool = False, keep_state: bool = False,
                 log: Callable[[str], None] | None = None, timing: Timing | None = None) -> None:
        self.workspace = workspace
        self.run_dir = run_dir
        self.catalog = catalog
        self.plugin = plugin
        self.settings = settings
        self.parallel = parallel
        self.keep_state = keep_state
        self.timing = timing or Timing()
        self._say = log
        self.logs = RunLogs(run_dir)
        self.driver = LocalDriver(workspace)
        self.env = f"scenario-{secrets.token_hex(4)}"
        self.instances: dict[str, Instance] = {}
        self.failure: ActionFailure | None = None
        self.warnings: list[str] = []
        self.kill_statuses: list[dict[str, str]] = []  # each Kill's logged statuses, in order
        self._run: RunInfo | None = None
        self._log: ActionLog | None = None
        self._phase: PhaseSteps | None = None
        self._applied: set[str] = set()
        self._configuring: list[str] = []
        self._pending: list[LifecycleError] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._spawned = 0

    # --- output -------------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """The run's driver environment: records, process logs and the shared `state/`."""
        return self.driver.env_dir(self.env)

    @property
    def run(self) -> RunInfo:
        """The run in progress (set by begin_run)."""
        if self._run is None:
            raise RuntimeError("the executor has no run: begin_run was not called")
        return self._run

    def say(self, line: str) -> None:
        """A line for the console (the `log` callback)."""
        if self._say is not None:
            self._say(line)

    def warn(self, message: str) -> None:
        """A warning: on the console, in the report of warnings and in the current log."""
        self.warnings.append(message)
        self.say(f"warning: {message}")
        self._write(f"warning: {message}")

    def _write(self, text: str) -> None:
        if self._log is not None:
            self._log.write(text)

    # --- run and action boundaries ------------------------------------------------------------

    def begin_run(self, run: RunInfo) -> None:
        """Create the run's driver environment empty and start watching processes."""
        self._run = run
        try:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            (self.state_dir / "state").mkdir(parents=True)
        except OSError as exc:
            raise InfrastructureError(f"cannot create the shared state {self.state_dir}: "
                                      f"{exc.strerror or exc}",
                                      "check the workspace is writable") from None
        self.say(f"seed {'none' if run.seed is None else run.seed}; shared state {self.state_dir}")
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="scenario-watch", daemon=True)
        self._watcher.start()

    def begin_action(self, number: int, entry: PlanEntry) -> None:
        """Open the action's log file."""
        self._log = self.logs.action(number, entry)
        self.say(f"{number:03d} {entry.action.line()}")

    def end_action(self, number: int, entry: PlanEntry, error: BaseException | None) -> None:
        """Close the action's log; an exit found now fails this action. A failure renames the
        file FAILED_ and appends the logs of every running instance before teardown kills them."""
        log = self._log
        assert log is not None
        raised = False
        if error is None:
            self._sweep()
            error = self._take_pending()
            raised = error is not None
        if error is None:
            log.write(f"ended {now()}: ok")
            self._log = None
            return
        log.write(f"ended {now()}: FAILED\n{error_text(error)}")
        if isinstance(error, CheckStepFailure):
            for other in error.others:
                log.write(f"also failed: {error_text(other)}")
        for inst in sorted(self.instances.values(), key=lambda i: i.name):
            for proc in inst.live():
                log.section(f"log of running {proc.label} ({proc.record['name']})",
                            proc.record["log"], int(proc.record.get("logOffset", 0)))
        path = self.logs.fail(log)
        self.failure = ActionFailure(number, entry, error, path, self.instance_report())
        self.say(f"FAILED {number:03d} {entry.action.line()}: {error_text(error)}")
        self._log = None
        if raised:
            raise error

    def end_run(self, error: BaseException | None) -> None:
        """Kill every instance still running (logs to teardown.log) and delete the shared state
        unless keep_state."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        log = self.logs.teardown()
        self._log = log
        try:
            for inst in sorted(self.instances.values(), key=lambda i: i.name):
                live = inst.live()
                if not live:
                    continue
                log.write(f"killing {inst.name}")
                self._kill_processes(inst, live)
                for proc in live:
                    self._capture(proc)
            if error is None and self.failure is None:
                self._sweep()
                pending = self._take_pending()
                if pending is not None:
                    log.write(f"note: {error_text(pending)}")
            if self.keep_state:
                log.write(f"shared state kept: {self.state_dir}")
            else:
                shutil.rmtree(self.state_dir, ignore_errors=True)
                log.write(f"shared state deleted: {self.state_dir}")
        except Exception as exc:  # teardown must not hide the run's own outcome
            log.write(f"teardown error: {error_text(exc)}")
        finally:
            log.write(f"teardown ended {now()}")
            self._log = None
            self.driver.close()

    # --- phases -------------------------------------------------------------------------------

    def start_phase(self, action: PhaseAction) -> None:
        """Start every selected check's step of the phase (sequentially or in threads)."""
        inst = self._instance(action.instance)
        log = self._log

        def run_one(check: CheckRun, phase: Phase) -> None:
            def out(line: str) -> None:
                if log is not None:
                    log.write(f"[{check.name}] {line}")

            step = check.step(phase)
            ctx = self._context(inst, check.name, phase, check.check.rng, out)
            out(f"step started {now()}")
            try:
                run_step(step, ctx, timeout=self.settings.step_timeout, output=out,
                         cwd=self.workspace, kill_grace=self.timing.kill_grace)
            except BaseException as exc:
                out(f"step failed {now()}: {error_text(exc)}")
                raise
            out(f"step passed {now()}")

        self._phase = PhaseSteps(self.run.checks, action.phase_name, run_one,
                                 parallel=self.parallel)
        self._phase.start()

    def join_phase(self, action: PhaseAction) -> None:
        """Wait for the phase's steps; raise the earliest failure in check order."""
        phase, self._phase = self._phase, None
        assert phase is not None
        phase.join()

    def _context(self, inst: Instance, check: str, phase: Phase, rng: random.Random,
                 out: Callable[[str], None]) -> StepContext:
        run = self.run
        return StepContext(
            scenario=run.scenario, seed=run.seed, check=check, phase=phase, instance=inst.name,
            current_version=inst.version if inst.led else inst.started_version,
            generation=inst.generation if inst.generation is not None else inst.started_generation,
            base_version=run.base_version, target_version=run.target_version, rng=rng,
            endpoints=self.endpoints(inst.name), logger=step_logger(check, out),
            deadline=time.monotonic() + self.settings.step_timeout)

    def endpoints(self, instance: str) -> dict[str, dict[str, str]]:
        """Component → `public`/`internal` → URL of the instance's running processes."""
        inst = self.instances.get(instance)
        out: dict[str, dict[str, str]] = {}
        for proc in inst.live() if inst else []:
            self._refresh(proc)
            urls = {k: f"http://{proc.record[k]}" for k in ("public", "internal")
                    if proc.record.get(k)}
            if urls:
                out[proc.component] = urls
        return out

    # --- Configure ----------------------------------------------------------------------------

    def configure(self, action: Configure) -> None:
        """Apply the plugin's setup items not yet recorded, in order."""
        inst = self._instance(action.instance)
        self._configuring = []
        for item in self.plugin.setup_items:
            if item.name in self._applied:
                continue

            def out(line: str, name: str = item.name) -> None:
                self._write(f"[{name}] {line}")

            ctx = self._context(inst, item.name, "initialize", self._item_rng(item.name), out)
            out("setup item started")
            run_step(item.apply, ctx, timeout=self.settings.step_timeout, output=out,
                     cwd=self.workspace, kill_grace=self.timing.kill_grace)
            self._configuring.append(item.name)
        if not self._configuring:
            self._write("nothing to configure")

    def join_configure(self, action: Configure) -> None:
        """Record the items `configure` applied (only now, after success)."""
        self._applied.update(self._configuring)
        if self._configuring:
            self._write(f"configured: {', '.join(self._configuring)}")
        self._configuring = []

    def _item_rng(self, name: str) -> random.Random:
        seed = self.run.seed
        return random.Random(f"{'none' if seed is None else seed}/setup/{name}")

    # --- Start --------------------------------------------------------------------------------

    def start(self, action: Start) -> None:
        """Start the version's components as instance `action.instance` (spec §3 Start)."""
        self._sweep()
        self._raise_pending()
        with self._lock:
            inst = self.instances.setdefault(action.instance, Instance(action.instance))
            if inst.live():
                raise LifecycleError(
                    f"cannot start {inst.name}: {', '.join(p.label for p in inst.live())} "
                    "still running", hint="Kill it first, or let a Promote fence it")
            refusal = action.expect_refusal != "none"
            inst.processes = {}
            inst.started_version = action.version
            inst.started_generation = action.generation
            inst.read_only = action.read_only and not refusal
            inst.refusal = refusal
            components = self.catalog.components(action.version)
            if refusal:  # only stateful processes can refuse; stateless ones would never exit
                components = {c: e for c, e in components.items()
                              if e.get("stateless") is not True}
            for component, entry in sorted(components.items()):
                spec = dict(entry)
                spec["env"] = {**(entry.get("env") or {}), **action.env}
                proc = Process(inst.name, component, spec, spec.get("stateless") is not True,
                               self._spawn(inst.name, component, spec, action.generation),
                               expected=refusal)
                inst.processes[component] = proc
                self._write(f"started {proc.label} as {proc.record['name']} "
                            f"(pid {proc.record['pid']}), generation {action.generation}")
        if refusal:
            self._await_refusal(inst, action)
        elif inst.read_only:
            self._await_answer(inst, action.timeout)
        else:
            self._poll(inst, "IsLeader", action.timeout, self.timing.fast_poll, progress=False)
            inst.version, inst.generation, inst.led = action.version, action.generation, True
            self._probe(inst)

    def _spawn(self, instance: str, component: str, spec: dict[str, Any],
               generation: int) -> dict[str, Any]:
        self._spawned += 1
        name = f"{instance}-{component}-g{generation}-{self._spawned}"
        try:
            return self.driver.start_workload(self.env, name, component, spec, generation,
                                              {"instance": instance}, wait=False)
        except OSError as exc:
            raise InfrastructureError(f"cannot spawn {instance}/{component}: "
                                      f"{exc.strerror or exc}",
                                      "check the machine's process and file limits") from None

    def _await_answer(self, inst: Instance, timeout: float) -> None:
        """Read-only: until every process runs and answers (restarts happen meanwhile)."""
        deadline = time.monotonic() + timeout
        while True:
            self._sweep()
            self._raise_pending()
            if all(self._answers(p) for p in inst.processes.values()):
                self._write(f"{inst.name} answers: " + ", ".join(
                    f"{p.component}={self.driver.leader_status(p.record)}"
                    for p in inst.stateful()))
                return
            if time.monotonic() >= deadline:
                raise LifecycleError(f"Timed out waiting for {inst.name} to answer")
            time.sleep(self.timing.fast_poll)

    def _answers(self, proc: Process) -> bool:
        if proc.done:
            return False
        self._refresh(proc)
        if not proc.stateful:
            return bool(proc.record.get("internal") or proc.record.get("public"))
        return self.driver.leader_status(proc.record) != "unreachable"

    def _await_refusal(self, inst: Instance, action: Start) -> None:
        """Every process must exit within the exit timeout without ever reporting
        ReadyToPromote or IsLeader, with status 0 (fenced) or non-zero (refused)."""
        deadline = time.monotonic() + self.timing.exit_timeout
        led: dict[str, str] = {}
        while True:
            self._sweep()
            live = inst.live()
            for proc in live:
                if proc.stateful and proc.component not in led:
                    self._refresh(proc)
                    status = self.driver.leader_status(proc.record)
                    if status in ("ReadyToPromote", "IsLeader"):
                        led[proc.component] = status
            if not live or time.monotonic() >= deadline:
                break
            time.sleep(self.timing.fast_poll)
        fenced = action.expect_refusal == "fenced"
        wrong = [p for p in inst.processes.values()
                 if p.done and ((p.status == 0) != fenced)]
        if not live and not led and not wrong:
            self._write(f"{inst.name} refused as expected ({action.expect_refusal}): " + ", ".join(
                f"{p.component} exited {p.status}" for p in inst.processes.values()))
            for proc in inst.processes.values():
                self._capture(proc)
            return
        survivors = inst.live()
        facts = [f"{p.label} exited {p.status}" if p.done else f"{p.label} still running"
                 for _, p in sorted(inst.processes.items())]
        facts += [f"{inst.name}/{c} reported {s}" for c, s in sorted(led.items())]
        details = "\n".join(p.tail() for _, p in sorted(inst.processes.items()))
        if survivors:
            self._kill_processes(inst, survivors)
        want = "exit 0 (fenced)" if fenced else "exit non-zero (refused)"
        raise LifecycleError(
            f"{inst.name} did not refuse as expected: every process should {want} within "
            f"{seconds(self.timing.exit_timeout)} s without leading; {'; '.join(facts)}",
            details)

    def _probe(self, inst: Instance) -> None:
        probe = self.plugin.version_probe
        if probe is None:
            return
        want = inst.version if inst.version is not None else self.run.target_version
        ctx = self._context(inst, "version-probe", "initialize", self._item_rng("probe"),
                            self._write)
        try:
            got = probe(ctx)
        except Exception as exc:
            raise LifecycleError(f"the version probe failed on {inst.name}: {error_text(exc)}",
                                 hint="see the plugin's version_probe") from None
        self._write(f"version probe: {inst.name} reports {got}")
        if want is not None and got != want:
            raise LifecycleError(f"{inst.name} reports version {got}, expected {want}",
                                 hint="the started processes do not run the planned version")

    # --- Kill ---------------------------------------------------------------------------------

    def kill(self, action: Kill) -> None:
        """Log each stateful component's status, SIGKILL every process group of the instance,
        wait for exit, and append each process's complete log (capture_logs)."""
        self._sweep()
        inst = self.instances.get(action.instance)
        if inst is None or not inst.processes:
            self._write(f"{action.instance} is not running; nothing to kill")
            self.kill_statuses.append({})
            return
        statuses: dict[str, str] = {}
        for proc in inst.stateful():
            self._refresh(proc)
            statuses[proc.component] = (f"exited {proc.status}" if proc.done
                                        else self.driver.leader_status(proc.record))
            self._write(f"{proc.label}: {statuses[proc.component]}")
        self.kill_statuses.append(statuses)
        live = inst.live()
        self._kill_processes(inst, live)
        if not live:
            self._write(f"{inst.name} had already exited")
        if action.capture_logs:
            for proc in inst.processes.values():
                self._capture(proc)

    def killed_mid_catch_up(self) -> bool:
        """Whether the first Kill logged Initializing for some stateful component."""
        return bool(self.kill_statuses) and "Initializing" in self.kill_statuses[0].values()

    def _kill_processes(self, inst: Instance, procs: Iterable[Process]) -> None:
        with self._lock:
            for proc in procs:
                proc.expected = True
            for proc in procs:
                if proc.done:
                    continue
                status = self.driver.kill(self.env, proc.record)
                proc.exits.append(-9 if status is None else status)
                proc.done = True
                self._write(f"killed {proc.label} ({proc.record['name']}): exit status "
                            f"{proc.status}")

    def _capture(self, proc: Process) -> None:
        for record in [*proc.history, proc.record]:
            if self._log is not None:
                self._log.section(f"log of {proc.label} ({record['name']})", record["log"],
                                  int(record.get("logOffset", 0)))

    # --- WaitReady and Promote ----------------------------------------------------------------

    def wait_ready(self, action: WaitReady) -> None:
        """Poll until every stateful component reports ReadyToPromote."""
        inst = self._instance(action.instance)
        self._poll(inst, "ReadyToPromote", action.timeout, self.timing.poll_interval,
                   forbidden=("IsLeader", "Promoting"))

    def promote(self, action: Promote) -> None:
        """POST promote to each stateful component in lexical order, wait for IsLeader, then
        (with `fences`) for the fenced instance to exit by itself."""
        self._sweep()
        self._raise_pending()
        inst = self._instance(action.instance)
        fenced = self.instances.get(action.fences) if action.fences else None
        if fenced is not None:
            with self._lock:
                for proc in fenced.processes.values():
                    proc.expected = True
        for proc in inst.stateful():
            self._refresh(proc)
            resp = self.driver.post_leader(proc.record, "promote")
            if resp is None:
                raise LifecycleError(f"Promote of {proc.label} failed: the service is "
                                     "unreachable", proc.tail())
            try:
                ok = resp.json().get("result") == "Success"
            except (ValueError, AttributeError):
                ok = False
            self._write(f"POST promote {proc.label}: HTTP {resp.status_code} {resp.text}")
            if not ok:
                raise LifecycleError(f"Promote of {proc.label} failed: HTTP {resp.status_code} "
                                     f"{resp.text.strip()}")
        self._poll(inst, "IsLeader", action.timeout, self.timing.poll_interval)
        inst.version, inst.generation, inst.led = (inst.started_version,
                                                   inst.started_generation, True)
        if fenced is not None:
            self._await_fenced(fenced, inst)

    def _await_fenced(self, fenced: Instance, by: Instance) -> None:
        deadline = time.monotonic() + self.timing.exit_timeout

        while self._stateful_live(fenced) and time.monotonic() < deadline:
            time.sleep(self.timing.fast_poll)
            self._sweep()
        survivors = self._stateful_live(fenced)
        stateless = [p for p in fenced.live() if not p.stateful]
        if stateless and not survivors:  # nothing fences them: they go with their instance
            self._kill_processes(fenced, stateless)
        if survivors:
            raise LifecycleError(
                f"{fenced.name} still runs {seconds(self.timing.exit_timeout)} s after "
                f"{by.name} was promoted: {', '.join(p.label for p in survivors)}",
                "\n".join(p.tail() for p in survivors),
                hint="a fenced generation must exit by itself (rollouts.md §6)")
        self._write(f"{fenced.name} exited after being fenced: " + ", ".join(
            f"{p.component} exited {p.status}" for p in fenced.processes.values()))
        for proc in fenced.processes.values():
            self._capture(proc)

    @staticmethod
    def _stateful_live(inst: Instance) -> list[Process]:
        return [p for p in inst.live() if p.stateful]

    def _poll(self, inst: Instance, want: str, timeout: float, interval: float, *,
              forbidden: tuple[str, ...] = (), progress: bool = True) -> None:
        """Poll the stateful components' statuses until all report `want` (spec §3 WaitReady:
        connection errors are ignored; a forbidden status or an instance that has exited fails
        at once; timeout fails with the last statuses)."""
        deadline = time.monotonic() + timeout
        statuses: dict[str, str] = {}
        polls = 0
        while True:
            self._sweep()
            self._raise_pending()
            procs = inst.stateful()
            if procs and all(p.done for p in procs):
                raise LifecycleError(f"every process of {inst.name} has exited",
                                     "\n".join(p.tail() for p in procs))
            for proc in procs:
                self._refresh(proc)
                statuses[proc.component] = self.driver.leader_status(proc.record)
            polls += 1
            if progress:
                self._write(f"poll {polls}: " + ", ".join(f"{c}={s}"
                                                          for c, s in statuses.items()))
            bad = [(c, s) for c, s in statuses.items() if s in forbidden]
            if bad:
                raise LifecycleError(
                    f"{inst.name}/{bad[0][0]} reports {bad[0][1]} while waiting for {want}",
                    hint="another action promoted it, or it started as a leader")
            if all(s == want for s in statuses.values()):
                self._write(f"{inst.name}: every stateful component reports {want}")
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise LifecycleError(f"Timed out waiting for {inst.name} to reach {want}, "
                                     f"still in status {_last(statuses, want)}")
            time.sleep(min(interval, left))

    # --- watching processes -------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(self.timing.watch_interval):
            try:
                self._sweep()
            except Exception as exc:  # a restart that cannot spawn fails the run, not the thread
                with self._lock:
                    self._pending.append(LifecycleError(f"watching processes failed: "
                                                        f"{error_text(exc)}"))

    def _sweep(self) -> None:
        """Notice every exit: restart a read-only process within `max_restarts`, accept exits an
        action caused, and queue any other exit as a failure for the next boundary."""
        with self._lock:
            for inst in self.instances.values():
                for proc in inst.live():
                    status = self.driver.exit_status(proc.record)
                    if status is None:
                        continue
                    self.driver.forget(self.env, proc.record)
                    proc.exits.append(status)
                    self._exited(inst, proc, status)

    def _exited(self, inst: Instance, proc: Process, status: int) -> None:
        if proc.expected or inst.refusal:
            proc.done = True
            return
        if inst.read_only and status != 0:
            if len(proc.exits) <= self.settings.max_restarts:
                self._write(f"{proc.label} exited {status}; restart {len(proc.exits)} of "
                            f"at most {self.settings.max_restarts}")
                self.say(f"restarting {proc.label} (exited {status})")
                proc.history.append(proc.record)
                proc.record = self._spawn(inst.name, proc.component, proc.spec,
                                          inst.started_generation)
                return
            proc.done = True
            self._pending.append(UnexpectedExit(
                f"{proc.label} exited {status} {len(proc.exits)} times", proc.tail(),
                hint=f"it was restarted {self.settings.max_restarts} times ([scenarios] "
                     "max_restarts)"))
            return
        proc.done = True
        self._pending.append(UnexpectedExit(
            f"{proc.label} exited with status {status} although no action stopped it",
            proc.tail(), hint="an instance's processes exit only when killed or fenced"))

    def _take_pending(self) -> LifecycleError | None:
        with self._lock:
            if not self._pending:
                return None
            first = self._pending[0]
            for other in self._pending[1:]:
                self._write(f"also: {error_text(other)}")
            self._pending.clear()
            return first

    def _raise_pending(self) -> None:
        error = self._take_pending()
        if error is not None:
            raise error

    def _refresh(self, proc: Process) -> None:
        """Fill in the addresses a process announced since it was recorded."""
        if proc.record.get("internal") is not None or proc.done:
            return
        name = proc.record["name"]
        for record in self.driver.records(self.env):
            if record.get("name") == name:
                proc.record = record
                return

    def _instance(self, name: str) -> Instance:
        inst = self.instances.get(name)
        if inst is None:
            raise LifecycleError(f"instance {name} was never started",
                                 hint="the plan must Start an instance before using it")
        return inst

    # --- reporting ----------------------------------------------------------------------------

    def instance_report(self) -> dict[str, Any]:
        """Every instance's version (tag, `T` for the target, None if it never led) and
        generation, whether it runs, and its processes' exit statuses and restarts."""
        out: dict[str, Any] = {}
        for name, inst in sorted(self.instances.items()):
            out[name] = {
                "version": (inst.version or "T") if inst.led else None,
                "generation": inst.generation,
                "running": bool(inst.live()),
                "started": {"version": inst.started_version or "T",
                            "generation": inst.started_generation,
                            "read_only": inst.read_only, "refusal": inst.refusal},
                "processes": {c: {"pid": p.record.get("pid"), "running": not p.done,
                                  "exit_status": p.status,
                                  "restarts": max(0, len(p.history))}
                              for c, p in sorted(inst.processes.items())}}
        return out


def _last(statuses: dict[str, str], want: str) -> str:
    """The statuses a timeout quotes: one value when all pending components agree."""
    pending = {c: s for c, s in statuses.items() if s != want} or statuses
    values = set(pending.values())
    if len(values) == 1:
        return values.pop()
    if not values:
        return "unreachable"
    return ", ".join(f"{c}={s}" for c, s in sorted(pending.items()))

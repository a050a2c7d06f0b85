"""Running one check step (spec §2): a callable `fn(ctx)` in a thread, or an argv command run
without a shell in exactly the documented environment; both under the step timeout, their output
going line by line to the action log."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lockstep.errors import LockstepError
from lockstep.scenarios.check import Step, StepContext

KILL_GRACE = 10.0  # seconds between SIGTERM and SIGKILL for an argv step that timed out
Output = Callable[[str], None]
"""Receives the step's output, one line at a time, without the newline."""


class StepError(LockstepError):
    """A step failed in a way only the runner sees: an argv step's status, or a timeout."""


class StepTimeout(StepError):
    """The step ran longer than `[scenarios] step_timeout`."""


def seconds(value: float) -> str:
    """A duration as the messages print it: whole seconds without a fraction."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def endpoint_variables(endpoints: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """`LOCKSTEP_ENDPOINT_<COMPONENT>_<NAME>` for every endpoint (upper case, `-` as `_`)."""
    def part(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9]", "_", text).upper()

    return {f"LOCKSTEP_ENDPOINT_{part(c)}_{part(n)}": url
            for c, named in sorted(endpoints.items()) for n, url in sorted(named.items())}


def step_environment(ctx: StepContext, step_seed: int) -> dict[str, str]:
    """The whole environment of an argv step: PATH, LC_ALL and the LOCKSTEP_* variables of
    spec §2; nothing else of lockstep's own environment (so the queue's variables never leak).
    A version that is the target is written as the target's version tag."""
    def version(value: str | None) -> str:
        return value if value is not None else (ctx.target_version or "")

    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
        "LOCKSTEP_SCENARIO": ctx.scenario,
        "LOCKSTEP_SEED": "none" if ctx.seed is None else str(ctx.seed),
        "LOCKSTEP_CHECK": ctx.check, "LOCKSTEP_PHASE": ctx.phase,
        "LOCKSTEP_INSTANCE": ctx.instance,
        "LOCKSTEP_CURRENT_VERSION": version(ctx.current_version),
        "LOCKSTEP_BASE_VERSION": version(ctx.base_version),
        "LOCKSTEP_TARGET_VERSION": ctx.target_version or "",
        "LOCKSTEP_STEP_SEED": str(step_seed),
        **endpoint_variables(ctx.endpoints)}


class _LineHandler(logging.Handler):
    """Sends each record of a step's logger to the action log as one line."""

    def __init__(self, output: Output) -> None:
        super().__init__()
        self.output = output
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        for line in self.format(record).splitlines() or [""]:
            self.output(line)


def step_logger(name: str, output: Output) -> logging.Logger:
    """A logger writing to the action log only: not registered globally, not propagated."""
    logger = logging.Logger(f"lockstep.scenarios.step.{name}", logging.DEBUG)
    logger.propagate = False
    logger.addHandler(_LineHandler(output))
    return logger


def run_step(step: Step, ctx: StepContext, *, timeout: float, output: Output,
             cwd: Path | None = None, kill_grace: float = KILL_GRACE) -> None:
    """Run `step` against `ctx` within `timeout` seconds; raise its failure.

    A callable runs in a daemon thread (`ctx.deadline` tells it when time is up; a thread cannot
    be killed, so one that overruns is abandoned and the step fails). An argv step runs in its
    own session with `step_environment`; on timeout its group gets SIGTERM, then SIGKILL after
    `kill_grace` seconds. `LOCKSTEP_STEP_SEED` is drawn from the check's rng only for argv steps,
    when they start.
    """
    if callable(step):
        _run_callable(step, ctx, timeout, output)
    else:
        env = step_environment(ctx, ctx.rng.getrandbits(63))
        _run_argv(list(step), env, timeout, output, cwd, kill_grace)


def _run_callable(fn: Callable[[StepContext], object], ctx: StepContext, timeout: float,
                  output: Output) -> None:
    failure: list[BaseException] = []

    def target() -> None:
        try:
            fn(ctx)
        except BaseException as exc:
            failure.append(exc)
            for chunk in traceback.format_exception(exc):
                for line in chunk.rstrip("\n").splitlines():
                    output(line)

    thread = threading.Thread(target=target, daemon=True,
                              name=f"step-{ctx.check}-{ctx.phase}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        output(f"step timed out after {seconds(timeout)} s; its thread is abandoned")
        raise StepTimeout(f"step timed out after {seconds(timeout)} s")
    if failure:
        raise failure[0]


def _run_argv(argv: Sequence[str], env: dict[str, str], timeout: float, output: Output,
              cwd: Path | None, kill_grace: float) -> None:
    output(f"$ {shlex.join(argv)}")
    try:
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as exc:
        raise StepError(f"cannot run {shlex.join(argv)}: {exc.strerror or exc}",
                        "an argv step's program must exist on PATH or be a path") from None

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            output(raw.decode("utf-8", errors="replace").rstrip("\r\n"))

    reader = threading.Thread(target=pump, daemon=True, name="step-output")
    reader.start()
    try:
        status = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        for sig, wait in ((signal.SIGTERM, kill_grace), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        reader.join(kill_grace)
        output(f"step timed out after {seconds(timeout)} s; killed")
        raise StepTimeout(f"step timed out after {seconds(timeout)} s") from None
    reader.join(kill_grace)
    if status != 0:
        raise StepError(f"{shlex.join(argv)} exited with status {status}",
                        "its output is in the action's log")

"""A stage command for tests: records that it ran, then passes, fails, sleeps or crashes by rule.

Usage: python gate.py RULES_JSON STAGE_NAME. Rules (all optional), keyed by stage name:
  {"check": {"fail_if": [["beta", "v1.2.0"]],   # fail when the candidate pins beta at v1.2.0
             "exit": 1,                        # exit code used for failures
             "exits": [75, 75, 0],             # exit codes by invocation count (then 0)
             "sleep": 0.0,                     # seconds to sleep first
             "kill_worker_once": true,         # SIGKILL our parent (the worker), first time only
             "kill_worker_always": true,       # SIGKILL our parent every time
             "spawn_child_sleep": 0,           # leave a grandchild sleeping (timeout tests)
             "exit_after_kill": true,          # exit at once after killing the worker
             "env_file": "/path",              # write our environment (JSON) there
             "wait_file": "/abs/release"}}     # announce the start, then block until it exists
With spawn_child_sleep, {"gate": pid, "child": pid} is written to RULES_JSON + ".pids.STAGE".
wait_file lets a test act while a stage is known to be running: the gate writes
"<path>.started.<n>" (n = 1, 2, ... counts this stage's invocations) and "<path>.started" (the
latest), each holding {"pid", "ppid", "stage", "config", "item", "n"}, then polls every 10 ms
until "<path>" exists and goes on with the other rules. After WAIT_CAP seconds it gives up and
exits 3, so a test that never releases it fails instead of hanging.
Each invocation appends a JSON line to RULES_JSON + ".runs".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

WAIT_CAP = 120.0  # seconds a wait_file stage blocks at most: a safety net, not a timing


def main() -> int:
    rules_path = Path(sys.argv[1])
    stage = sys.argv[2]
    rules = json.loads(rules_path.read_text()) if rules_path.exists() else {}
    rule = rules.get(stage, {})
    manifest = tomllib.loads(Path(os.environ["LOCKSTEP_MANIFEST"]).read_text())
    config = os.environ["LOCKSTEP_CONFIG"]
    pins = manifest["configurations"][config]
    runs_path = rules_path.with_name(rules_path.name + ".runs")
    previous = runs_path.read_text().splitlines() if runs_path.exists() else []
    count = sum(1 for line in previous if json.loads(line)["stage"] == stage)
    with open(runs_path, "a") as fh:
        fh.write(json.dumps({
            "stage": stage, "config": config, "item": os.environ["LOCKSTEP_ITEM"],
            "attempt": os.environ["LOCKSTEP_ATTEMPT"], "try": os.environ["LOCKSTEP_TRY"],
            "pins": {k: v["version"] for k, v in pins.items()},
            "candidate": os.environ["LOCKSTEP_CANDIDATE"],
            "components": sorted(os.listdir(os.environ["LOCKSTEP_COMPONENTS_DIR"])),
        }) + "\n")
    print(f"gate {stage} for {config}: pins {pins}")
    if rule.get("env_file"):
        environ = Path("/proc/self/environ").read_bytes().split(b"\0")  # as exec'd, unaltered
        pairs = [e.decode().split("=", 1) for e in environ if e]
        Path(rule["env_file"]).write_text(json.dumps(dict(pairs)))
    if rule.get("spawn_child_sleep"):
        child = subprocess.Popen(["sleep", str(rule["spawn_child_sleep"])])
        rules_path.with_name(rules_path.name + f".pids.{stage}").write_text(
            json.dumps({"gate": os.getpid(), "child": child.pid}))
    if rule.get("wait_file") and not _wait_for_release(Path(rule["wait_file"]), count + 1, {
            "pid": os.getpid(), "ppid": os.getppid(), "stage": stage, "config": config,
            "item": os.environ["LOCKSTEP_ITEM"], "n": count + 1}):
        return 3
    if rule.get("sleep"):
        time.sleep(float(rule["sleep"]))
    marker = rules_path.with_name(rules_path.name + f".killed.{stage}")
    if rule.get("kill_worker_always") or (rule.get("kill_worker_once") and not marker.exists()):
        marker.write_text("x")
        os.kill(os.getppid(), signal.SIGKILL)
        if rule.get("exit_after_kill"):
            return 0
        time.sleep(5)
    exits = rule.get("exits")
    if exits:
        return int(exits[count]) if count < len(exits) else 0
    for component, version in rule.get("fail_if", []):
        if pins.get(component, {}).get("version") == version:
            print(f"gate {stage}: {component} {version} is known bad")
            return int(rule.get("exit", 1))
    return 0


def _wait_for_release(release: Path, n: int, started: dict[str, object]) -> bool:
    """Announce that this invocation started, then wait for the test to create `release`."""
    text = json.dumps(started)
    for marker in (release.with_name(f"{release.name}.started.{n}"),
                   release.with_name(f"{release.name}.started")):
        partial = marker.with_name(marker.name + ".tmp")
        partial.write_text(text)
        os.replace(partial, marker)  # a test never reads a half-written marker
    deadline = time.monotonic() + WAIT_CAP
    while not release.exists():
        if time.monotonic() >= deadline:
            print(f"gate: {release} was not created within {WAIT_CAP:g}s; giving up",
                  file=sys.stderr)
            return False
        time.sleep(0.01)
    return True


if __name__ == "__main__":
    sys.exit(main())

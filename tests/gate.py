"""A stage command for tests: records that it ran, then passes, fails, sleeps or crashes by rule.

Usage: python gate.py RULES_JSON STAGE_NAME. Rules (all optional), keyed by stage name:
  {"check": {"fail_if": [["beta", "v1.2.0"]],   # fail when the candidate pins beta at v1.2.0
             "exit": 1,                        # exit code used for failures
             "exits": [75, 75, 0],             # exit codes by invocation count (then 0)
             "sleep": 0.0,                     # seconds to sleep first
             "kill_worker_once": true,         # SIGKILL our parent (the worker), first time only
             "kill_worker_always": true,       # SIGKILL our parent every time
             "spawn_child_sleep": 0}}          # leave a grandchild sleeping (timeout tests)
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
    if rule.get("spawn_child_sleep"):
        subprocess.Popen(["sleep", str(rule["spawn_child_sleep"])])
    if rule.get("sleep"):
        time.sleep(float(rule["sleep"]))
    marker = rules_path.with_name(rules_path.name + f".killed.{stage}")
    if rule.get("kill_worker_always") or (rule.get("kill_worker_once") and not marker.exists()):
        marker.write_text("x")
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(5)
    exits = rule.get("exits")
    if exits:
        return int(exits[count]) if count < len(exits) else 0
    for component, version in rule.get("fail_if", []):
        if pins.get(component, {}).get("version") == version:
            print(f"gate {stage}: {component} {version} is known bad")
            return int(rule.get("exit", 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A distribution command for tests: bundles the stage-like workspace it is given, by rule.

Usage: python dist_command.py RULES_JSON. Rules (all optional):
  {"fail": true,            # print a line and exit 1 without writing an artifact
   "empty": true,           # exit 0 having written nothing
   "symlink": "/etc/hosts", # also write a symlink pointing there
   "fifo": "/abs/fifo",     # write "<fifo>.started" (our pid), then block reading the FIFO
   "copy_to": "/abs/dir"}   # also copy what we built into <dir>/<release>/ (to compare)
Writes $LOCKSTEP_DIST_DIR/bundle.txt (the release, the manifest it was given and every
component's files) and $LOCKSTEP_DIST_DIR/meta/release.json (the LOCKSTEP_* environment).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path


def main() -> int:
    """Run one build by the rules."""
    rules = json.loads(Path(sys.argv[1]).read_text()) if Path(sys.argv[1]).exists() else {}
    out = Path(os.environ["LOCKSTEP_DIST_DIR"])
    if rules.get("fifo"):
        fifo = Path(rules["fifo"])
        Path(f"{fifo}.started").write_text(str(os.getpid()))
        with open(fifo) as fh:  # blocks until the test opens it for writing
            fh.read()
    if rules.get("fail"):
        print("dist_command: failing as the rules say")
        return 1
    if rules.get("empty"):
        return 0
    parts = [f"release {os.environ['LOCKSTEP_RELEASE']}\n",
             Path(os.environ["LOCKSTEP_MANIFEST"]).read_text()]
    components = Path(os.environ["LOCKSTEP_COMPONENTS_DIR"])
    for name in sorted(p.name for p in components.iterdir()):
        parts.append((components / name / f"{name}.txt").read_text())
    (out / "bundle.txt").write_text("".join(parts))
    (out / "meta").mkdir()
    env = {k: v for k, v in os.environ.items() if k.startswith("LOCKSTEP_")}
    (out / "meta" / "release.json").write_text(json.dumps(env, sort_keys=True))
    if rules.get("copy_to"):
        shutil.copytree(out, Path(rules["copy_to"]) / os.environ["LOCKSTEP_RELEASE"])
    if rules.get("symlink"):
        (out / "escape").symlink_to(rules["symlink"])
    print(f"dist_command: built {os.environ['LOCKSTEP_RELEASE']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

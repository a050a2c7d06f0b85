"""What a stage sees: a real `lockstep queue run` runs a stage that writes its environment to a
file; only the documented base, `pass_env` and lockstep's own variables may be in it."""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

from lockstep import git
from lockstep.queue.model import State
from tests.system import System

# docs/queue.md, "Stage workspace and environment".
BASE = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
        "SSL_CERT_FILE", "SSL_CERT_DIR"}
LOCKSTEP_VARS = {
    "LOCKSTEP_MANIFEST", "LOCKSTEP_CONFIG", "LOCKSTEP_ITEM", "LOCKSTEP_ITEMS",
    "LOCKSTEP_COMPONENT", "LOCKSTEP_VERSION", "LOCKSTEP_CANDIDATE", "LOCKSTEP_BASE",
    "LOCKSTEP_STAGE", "LOCKSTEP_ATTEMPT", "LOCKSTEP_TRY", "LOCKSTEP_WORKSPACE",
    "LOCKSTEP_COMPONENTS_DIR",
}
QUEUE_PASS_ENV = ["CI_BUILD_ID", "HOOK_*"]
STAGE_PASS_ENV = ["PIP_*"]
SECRETS = {"HOOK_SIGNING_SECRET": "hmac-key-of-the-ci-hook",
           "LOCKSTEP_WEBHOOK_SECRET": "hmac-key-of-the-chat-hook"}
NOTIFIERS = """
[[notifiers]]
name = "ci-hook"
type = "webhook"
url = "http://127.0.0.1:9/ci"
secret_env = "HOOK_SIGNING_SECRET"

[[notifiers]]
name = "chat"
type = "webhook"
url = "http://127.0.0.1:9/chat"
secret_env = "LOCKSTEP_WEBHOOK_SECRET"
events = ["rejected", "landed"]
"""


def _with_queue_pass_env(system: System) -> None:
    """Add `[queue] pass_env` to the integration repo's lockstep.toml, committed and pushed."""
    path = system.ws_dir / "lockstep.toml"
    text = path.read_text()
    path.write_text(text.replace("[queue]\n", f"[queue]\npass_env = {json.dumps(QUEUE_PASS_ENV)}\n",
                                 1))
    git.run(["commit", "--quiet", "-am", "pass CI variables to stages"], system.ws_dir)
    git.run(["push", "--quiet", "origin", "HEAD:refs/heads/main"], system.ws_dir)


def test_stage_sees_only_the_documented_environment(tmp_path: Path) -> None:
    system = System.create(tmp_path / "sys", stages=("build", "check"), extra_config=NOTIFIERS,
                           stage_options=f"pass_env = {json.dumps(STAGE_PASS_ENV)}\n")
    _with_queue_pass_env(system)
    dumps = {stage: tmp_path / f"env.{stage}.json" for stage in ("build", "check")}
    system.set_rules({stage: {"env_file": str(path)} for stage, path in dumps.items()})
    worker_env = dict(os.environ, **SECRETS, CI_BUILD_ID="build-77", HOOK_BUILD_LABEL="nightly",
                      PIP_INDEX_URL="https://pypi.example/simple", UNRELATED_API_TOKEN="t0ken",
                      AWS_SECRET_ACCESS_KEY="aws-key", GIT_DIR="/elsewhere/.git",
                      LOCKSTEP_ITEM="q999", SHELL="/bin/sh", TERM="xterm")
    item = system.submit("alpha", "v1.1.0", configs=["default"])

    run = system.cli("queue", "run", env=worker_env)
    assert run.returncode == 0, run.stderr
    assert system.item(item.id).state == State.LANDED

    for stage, path in dumps.items():
        seen: dict[str, str] = json.loads(path.read_text())
        # No notifier secret, by name or by value, although `HOOK_*` matches one of them.
        assert not SECRETS.keys() & seen.keys()
        assert not set(SECRETS.values()) & set(seen.values())
        # Nothing outside the documented base, pass_env and lockstep's own variables.
        allowed = [*BASE, *LOCKSTEP_VARS, *QUEUE_PASS_ENV, *STAGE_PASS_ENV]
        outside = {k for k in seen if not any(fnmatch.fnmatchcase(k, p) for p in allowed)}
        assert outside == set(), stage
        for gone in ("UNRELATED_API_TOKEN", "AWS_SECRET_ACCESS_KEY", "GIT_DIR", "SHELL", "TERM",
                     "PYTHONPATH", "GIT_CONFIG_GLOBAL"):
            assert gone in worker_env or gone == "PYTHONPATH"
            assert gone not in seen
        # What pass_env names and globs does arrive, from [queue] and from the stage.
        assert seen["CI_BUILD_ID"] == "build-77"
        assert seen["HOOK_BUILD_LABEL"] == "nightly"
        assert seen["PIP_INDEX_URL"] == "https://pypi.example/simple"
        assert seen["PATH"] == worker_env["PATH"] and seen["HOME"] == worker_env["HOME"]
        # lockstep's variables are its own, not the worker's.
        assert seen.keys() >= LOCKSTEP_VARS
        assert seen["LOCKSTEP_ITEM"] == item.id and seen["LOCKSTEP_STAGE"] == stage

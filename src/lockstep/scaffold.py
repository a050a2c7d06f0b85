"""`lockstep init`: a new integration repo with a commented lockstep.toml and an empty manifest."""

from __future__ import annotations

from pathlib import Path

from lockstep import config as config_mod
from lockstep import git
from lockstep.errors import UsageError
from lockstep.manifest import render_new

TEMPLATE = """\
# lockstep.toml: how lockstep integrates and releases this system.
# Reference: docs/config.md in the lockstep repository.

[integration]
remote = "origin"             # the integration repo's remote that lockstep pushes to
branch = "main"               # the integration branch
manifest = "manifest.toml"    # the manifest file, relative to this repo
tag_format = "v{year}.{month:02d}.{n}"   # integration release tags: v2026.11.1, v2026.11.2, ...

[identity]                    # author, committer and tagger of lockstep's commits and tags
name = "lockstep"
email = "lockstep@localhost"

[queue]
mode = "serial"               # one item at a time; "speculative" tests the next items on top
                              # of it, "batch" several as one (docs/throughput.md), e.g.:
# mode = "speculative"
# runners = 4                 # runs this worker executes at once
max_recoveries = 3            # an item whose worker died this often is rejected (worker-lost)
infra_pause_after = 3         # pause the queue after this many infrastructure rejections in a row

# One table per component repository:
# [components.api]
# url = "https://git.example.com/acme/api.git"       # HTTPS (prompts disabled) or a local path
# ssh_url = "ssh://git@git.example.com/acme/api.git" # tried when url fails
# image = "registry.example.com/acme/api"            # the component's OCI artifact
# depends_on = []
# owners = ["team-api@example.com"]

# Stages run in this order for every configuration a bump changes; the first failure stops.
# [[stages]]
# name = "integration"
# command = ["make", "integration-test"]   # an argv, run without a shell, in a fresh workspace
# timeout = 600                            # seconds
# retries = 2                              # reruns of infrastructure failures (exit 75) only
# configurations = ["default"]             # optional: only for these configurations

# Notifiers tell component owners about rejections (and, if listed, other events).
# [[notifiers]]
# name = "owners"                         # stable: pending deliveries are bound to it
# type = "webhook"
# url = "https://hooks.example.com/lockstep"
# secret_env = "LOCKSTEP_WEBHOOK_SECRET"   # HMAC-SHA256 key for X-Lockstep-Signature
# events = ["rejected"]

# After each landing, build the release's artifacts from the tag (docs/distribution.md).
# [distribution]
# command = ["make", "dist"]              # writes its files into $LOCKSTEP_DIST_DIR
# timeout = 3600
# publish = "directory"                   # or "oci" with repository = "registry/name"
# directory = ".lockstep/dist"            # <directory>/<tag>/ and latest.json
"""

GITIGNORE = "# lockstep's local state: store, logs, caches, stage workspaces\n.lockstep/\n"


_INIT_FILES = {".git", config_mod.CONFIG_FILE, "manifest.toml", ".gitignore"}


def _interrupted_init(directory: Path) -> bool:
    """A repo with no commit yet holding only files init writes: a killed init, safe to redo."""
    if not (directory / ".git").is_dir():
        return False
    if any(p.name not in _INIT_FILES for p in directory.iterdir()):
        return False
    return git.rev_parse(directory, "HEAD") is None


def init(directory: Path, *, branch: str = "main", remote_url: str | None = None,
         config_text: str = TEMPLATE, manifest_text: str | None = None) -> Path:
    """Create and commit an integration repo in directory; refuses to overwrite one."""
    directory = directory.resolve()
    interrupted = _interrupted_init(directory)
    if (directory / config_mod.CONFIG_FILE).exists() and not interrupted:
        raise UsageError(
            f"{directory / config_mod.CONFIG_FILE} already exists",
            "this is already an integration repo; edit it instead",
        )
    if not interrupted and directory.exists() and any(
        p.name != ".git" for p in directory.iterdir()
    ):
        raise UsageError(f"{directory} is not empty", "choose a new or empty directory")
    if remote_url is not None and (remote_url.startswith("-") or
                                   any(ch.isspace() for ch in remote_url)):
        raise UsageError(f"invalid remote URL {remote_url!r}", "pass a git URL or path")
    config_mod.parse(config_text)
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / ".git").exists():
        git.run(["init", "--quiet", f"--initial-branch={branch}", str(directory)])
    (directory / config_mod.CONFIG_FILE).write_text(config_text, encoding="utf-8")
    (directory / "manifest.toml").write_text(
        manifest_text if manifest_text is not None else render_new({"default": {}}),
        encoding="utf-8")
    (directory / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    git.run(["add", "--", config_mod.CONFIG_FILE, "manifest.toml", ".gitignore"], directory)
    ident = ["-c", "user.name=lockstep", "-c", "user.email=lockstep@localhost"]
    git.run([*ident, "commit", "--quiet", "-m", "lockstep init"], directory)
    if remote_url is not None:
        git.run(["remote", "add", "origin", remote_url], directory)
        git.run(["push", "--quiet", "origin", f"{branch}:refs/heads/{branch}"], directory)
        git.run(["branch", "--quiet", f"--set-upstream-to=origin/{branch}"], directory)
    return directory

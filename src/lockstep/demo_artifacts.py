"""The demo's component CI: a post-receive hook that builds each tag's image into the layout.

`install_hook` puts demo_data/hooks/post-receive and its JSON settings into a bare repository;
for each pushed tag the hook starts a detached job that runs `run_job` here: wait a moment
(or, in tests, for a gate file), then write the tagged tree as an image with `ocilayout`.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import lockstep
from lockstep import git, ocilayout
from lockstep.errors import LockstepError, UsageError
from lockstep.release_config import PatternTransform, TagTransform, transform_tag

HOOK_NAME = "post-receive"
CONFIG_NAME = "lockstep-artifact.json"
MARKER = "lockstep demo CI"
GATE_TIMEOUT = 600.0  # a job whose gate never opens gives up after this long
LOG_DIR = ".build-logs"


@dataclass(frozen=True)
class ArtifactHook:
    """What a component's hook builds: `repository` (the image name in the layout registry,
    e.g. demo/inventory) under the transformed tag, `delay` seconds after the push."""

    repository: str
    layout_root: Path
    tag_transform: str | Mapping[str, str] = "none"
    delay: float = 2.0
    gate: Path | None = None  # tests: build only once this file exists, instead of the delay
    multi_platform: bool = False

    def log_path(self) -> Path:
        """The jobs' log: `<layout_root>/.build-logs/<repository>.log` (outside every layout)."""
        return self.layout_root / LOG_DIR / f"{self.repository}.log"


def install_hook(bare_repo: Path, hook: ArtifactHook, *, python: str = sys.executable) -> Path:
    """Install the artifact-building post-receive hook and its settings into `bare_repo`.

    `python` runs the jobs (it must be able to import lockstep's dependencies). Replaces an
    earlier lockstep hook; refuses to replace anyone else's. Returns the hook's path.
    """
    ocilayout.layout_dir(hook.layout_root, hook.repository)  # validates the name
    _transform(hook.tag_transform)  # validates the transform
    hooks = bare_repo / "hooks"
    target = hooks / HOOK_NAME
    if target.exists() and MARKER not in target.read_text(encoding="utf-8", errors="replace"):
        raise UsageError(f"{target} exists and is not lockstep's",
                         "remove it or chain it from another hook")
    hooks.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "repository": hook.repository,
        "layout_root": str(hook.layout_root.resolve()),
        "tag_transform": hook.tag_transform if isinstance(hook.tag_transform, str)
        else dict(hook.tag_transform),
        "delay": hook.delay,
        "gate": str(hook.gate) if hook.gate else None,
        "multi_platform": hook.multi_platform,
        "python": python,
        "pythonpath": [str(Path(lockstep.__file__).resolve().parents[1])],
        "log": str(hook.log_path().resolve()),
    }
    (hooks / CONFIG_NAME).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    script = resources.files(lockstep).joinpath("demo_data/hooks", HOOK_NAME).read_text("utf-8")
    shebang = f"#!{python} -I" if python.isprintable() and " " not in python \
        else "#!/usr/bin/env python3"
    target.write_text(shebang + "\n" + script.split("\n", 1)[1], encoding="utf-8")
    target.chmod(0o755)
    return target


def load_hook(config_path: Path) -> ArtifactHook:
    """The settings an installed hook reads (from its JSON file)."""
    raw = json.loads(config_path.read_text(encoding="utf-8"))
    return ArtifactHook(raw["repository"], Path(raw["layout_root"]), raw["tag_transform"],
                        float(raw["delay"]), Path(raw["gate"]) if raw["gate"] else None,
                        bool(raw["multi_platform"]))


def build_artifact(bare_repo: Path, obj: str, git_tag: str,
                   hook: ArtifactHook) -> ocilayout.Descriptor:
    """Write the tree of `obj` (under app/, with app/VERSION) as `<repository>:<image tag>`;
    the same commit and tag always give the same digest."""
    image_tag = transform_tag(_transform(hook.tag_transform), git_tag)
    commit = git.out(["--git-dir", str(bare_repo), "rev-parse", "--verify", f"{obj}^{{commit}}"])
    archive = git.run(["--git-dir", str(bare_repo), "archive", "--format=tar", commit]).stdout
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            data = tar.extractfile(member) if member.isfile() else None
            if data is not None:
                files[f"app/{member.name}"] = data.read()
    files["app/VERSION"] = f"{git_tag} {commit}\n".encode()
    labels = {"org.opencontainers.image.version": image_tag,
              "org.opencontainers.image.revision": commit}
    return ocilayout.write_image(hook.layout_root, hook.repository, image_tag, files,
                                 platforms=ocilayout.DEFAULT_PLATFORMS if hook.multi_platform
                                 else None, labels=labels)


def run_job(config_path: Path, bare_repo: Path, obj: str, git_tag: str) -> int:
    """The detached job: wait, build, log one line per step; exit status 1 on failure."""
    try:
        hook = load_hook(config_path)
        _log(f"tag {git_tag} ({obj[:12]}): building {hook.repository}")
        if hook.gate is not None:
            _wait_for(hook.gate)
        else:
            time.sleep(hook.delay)
        desc = build_artifact(bare_repo, obj, git_tag, hook)
    except (LockstepError, OSError, ValueError, KeyError, TimeoutError) as exc:
        text = exc.one_line() if isinstance(exc, LockstepError) else f"{type(exc).__name__}: {exc}"
        _log(f"tag {git_tag}: build failed: {text}")
        return 1
    _log(f"tag {git_tag}: built {hook.repository} {desc.digest}")
    return 0


def _wait_for(gate: Path) -> None:
    end = time.monotonic() + GATE_TIMEOUT
    while not gate.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"gate {gate} did not appear within {GATE_TIMEOUT:.0f}s")
        time.sleep(0.02)


def _transform(value: str | Mapping[str, str]) -> TagTransform:
    if isinstance(value, str):
        if value not in ("none", "strip-v", "helm-oci"):
            raise UsageError(f"unknown tag_transform {value!r}",
                             "use none, strip-v, helm-oci or {pattern, replace}")
        return value  # type: ignore[return-value]
    return PatternTransform(pattern=value["pattern"], replace=value["replace"])


def _log(message: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    print(f"{stamp} {message}", flush=True)

"""The demo's component CI: a post-receive hook that builds each tag's image into the layout.

`install_hook` puts demo_data/hooks/post-receive and its JSON settings into a bare repository;
for each pushed tag the hook starts a detached job that runs `run_job` here: wait a moment
(or, in tests, for a gate file), then write the tagged tree as an image with `ocilayout`, and
in push mode copy that image to a distribution registry with skopeo.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import lockstep
from lockstep import git, ocilayout, tagtransform
from lockstep.errors import LockstepError, UsageError

HOOK_NAME = "post-receive"
CONFIG_NAME = "lockstep-artifact.json"
MARKER = "lockstep demo CI"
GATE_TIMEOUT = 600.0  # a job whose gate never opens gives up after this long
LOG_DIR = ".build-logs"
PUSH_TIMEOUT = 300.0  # seconds one skopeo copy may take
SKOPEO_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "LC_ALL": "C.UTF-8"}


@dataclass(frozen=True)
class RegistryPush:
    """Push mode: after the build, copy the image to the distribution registry `registry`
    (`host[:port]`) over `scheme` ("https", trusting `ca_file` too, or "http" to a loopback
    test registry), as `username`/`password` when given. The values live in the hook's
    settings file (mode 0600), never in the pusher's environment or any argv."""

    registry: str
    scheme: str = "https"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None

    def __repr__(self) -> str:
        shown = "***" if self.password else None
        return (f"RegistryPush(registry={self.registry!r}, scheme={self.scheme!r}, "
                f"username={self.username!r}, password={shown!r}, ca_file={self.ca_file!r})")

    def as_json(self) -> dict[str, Any]:
        """As the settings file keeps it."""
        return {"registry": self.registry, "scheme": self.scheme, "username": self.username,
                "password": self.password,
                "ca_file": str(self.ca_file.resolve()) if self.ca_file else None}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RegistryPush:
        """From the settings file."""
        return cls(raw["registry"], raw.get("scheme", "https"), raw.get("username"),
                   raw.get("password"), Path(raw["ca_file"]) if raw.get("ca_file") else None)


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
    push: RegistryPush | None = None  # also copy each built image to this registry

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
    if hook.push is not None:
        _check_push(hook.push)
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
        "push": hook.push.as_json() if hook.push is not None else None,
    }
    config = hooks / CONFIG_NAME
    config.touch(mode=0o600)
    config.chmod(0o600)  # it may hold the registry password
    config.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    script = resources.files(lockstep).joinpath("demo_data/hooks", HOOK_NAME).read_text("utf-8")
    shebang = f"#!{python} -I" if python.isprintable() and " " not in python \
        else "#!/usr/bin/env python3"
    target.write_text(shebang + "\n" + script.split("\n", 1)[1], encoding="utf-8")
    target.chmod(0o755)
    return target


def load_hook(config_path: Path) -> ArtifactHook:
    """The settings an installed hook reads (from its JSON file)."""
    raw = json.loads(config_path.read_text(encoding="utf-8"))
    push = raw.get("push")
    return ArtifactHook(raw["repository"], Path(raw["layout_root"]), raw["tag_transform"],
                        float(raw["delay"]), Path(raw["gate"]) if raw["gate"] else None,
                        bool(raw["multi_platform"]),
                        RegistryPush.from_json(push) if push else None)


def build_artifact(bare_repo: Path, obj: str, git_tag: str,
                   hook: ArtifactHook) -> ocilayout.Descriptor:
    """Write the tree of `obj` (under app/, with app/VERSION) as `<repository>:<image tag>`;
    the same commit and tag always give the same digest."""
    image_tag = tagtransform.apply(_transform(hook.tag_transform), git_tag)
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
    if hook.push is None:
        return 0
    image_tag = tagtransform.apply(_transform(hook.tag_transform), git_tag)
    target = f"{hook.push.registry}/{hook.repository}:{image_tag}"
    try:
        pushed = push_image(hook, image_tag)
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        _log(f"tag {git_tag}: push to {target} failed: {_redact(str(exc), hook.push)}")
        return 1
    if pushed != desc.digest:
        _log(f"tag {git_tag}: push to {target} failed: the registry has {pushed}, "
             f"the layout {desc.digest}")
        return 1
    _log(f"tag {git_tag}: pushed {target} {pushed}")
    return 0


def push_image(hook: ArtifactHook, image_tag: str) -> str:
    """Copy `<repository>:<image_tag>` from the layout to the push registry with skopeo (every
    platform, digests preserved); the digest the registry stored. Credentials go through an
    auth file in a private temporary directory, removed afterwards."""
    push = hook.push
    if push is None:
        raise RuntimeError("the hook has no push registry")
    skopeo = shutil.which("skopeo", path=SKOPEO_ENV["PATH"])
    if skopeo is None:
        raise RuntimeError("skopeo is not installed")
    layout = ocilayout.layout_dir(hook.layout_root, hook.repository)
    with tempfile.TemporaryDirectory(prefix="lockstep-push-") as private:
        work = Path(private)
        args = [skopeo, "copy", "--all", "--preserve-digests", "--retry-times", "2",
                "--digestfile", str(work / "digest")]
        if push.username is not None and push.password is not None:
            token = base64.b64encode(f"{push.username}:{push.password}".encode()).decode()
            auth = work / "auth.json"
            fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"auths": {push.registry: {"auth": token}}}, out)
            args += ["--dest-authfile", str(auth)]
        if push.scheme == "http":
            args.append("--dest-tls-verify=false")
        elif push.ca_file is not None:
            (work / "certs").mkdir()
            shutil.copyfile(push.ca_file, work / "certs" / "ca.crt")
            args += ["--dest-cert-dir", str(work / "certs")]
        args += [f"oci:{layout}:{image_tag}",
                 f"docker://{push.registry}/{hook.repository}:{image_tag}"]
        env = {**SKOPEO_ENV, "HOME": str(work), "XDG_RUNTIME_DIR": str(work),
               "TMPDIR": str(work)}
        done = subprocess.run(args, env=env, cwd=work, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=PUSH_TIMEOUT,
                              check=False)
        if done.returncode != 0:
            said = " ".join(done.stderr.split())[-400:]
            raise RuntimeError(f"skopeo exited {done.returncode}: {said}")
        return (work / "digest").read_text(encoding="utf-8").strip()


def _check_push(push: RegistryPush) -> None:
    if push.scheme not in ("https", "http"):
        raise UsageError(f"push scheme {push.scheme!r} is neither https nor http",
                         "use https (or http to a loopback test registry)")
    if not push.registry or "/" in push.registry or any(c.isspace() for c in push.registry):
        raise UsageError(f"push registry {push.registry!r} is not host[:port]",
                         "name the registry as host or host:port")
    if (push.username is None) != (push.password is None):
        raise UsageError("push username and password go together", "set both or neither")


def _redact(text: str, push: RegistryPush) -> str:
    if push.password:
        text = text.replace(push.password, "***")
        if push.username:
            token = base64.b64encode(f"{push.username}:{push.password}".encode()).decode()
            text = text.replace(token, "***")
    return text


def _wait_for(gate: Path) -> None:
    end = time.monotonic() + GATE_TIMEOUT
    while not gate.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"gate {gate} did not appear within {GATE_TIMEOUT:.0f}s")
        time.sleep(0.02)


def _transform(value: str | Mapping[str, str]) -> tagtransform.Transform:
    try:
        return tagtransform.parse(value)
    except LockstepError as exc:
        raise UsageError(exc.message, exc.hint) from None


def _log(message: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    print(f"{stamp} {message}", flush=True)

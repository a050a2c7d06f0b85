"""Publishing a built distribution into `<directory>/<tag>/` atomically, and verifying it.

The files are copied into a hidden staging directory beside the target and renamed into place:
a reader sees the whole release or none of it, and a publish killed half way leaves only the
staging directory, which the next publish replaces.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from lockstep import faults
from lockstep.distribution.journal import Artifact
from lockstep.errors import LockstepError
from lockstep.workspace import Workspace

LATEST = "latest.json"


class VerifyError(LockstepError):
    """A published file is missing or its digest differs from the record (exit 1)."""


def directory(ws: Workspace) -> Path:
    """The configured publish directory (relative paths are under the workspace)."""
    configured = Path(ws.config.distribution.directory)
    return configured if configured.is_absolute() else ws.root / configured


def release_dir(ws: Workspace, tag: str) -> Path:
    """Where tag's files are published."""
    return directory(ws) / tag


def publish_directory(ws: Workspace, tag: str, built: Path,
                      found: list[Artifact]) -> dict[str, Any]:
    """Put the built files in `<directory>/<tag>/`; returns where, for the record."""
    dest = release_dir(ws, tag)
    if dest.is_dir() and not mismatches(dest, found):
        return {"kind": "directory", "path": str(dest)}  # a killed publish had renamed it
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".{dest.name}.part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for a in found:
        target = staging / a.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built / a.path, target)
        with open(target, "rb") as fh:
            os.fsync(fh.fileno())
    faults.crashpoint("dist-during-publish")
    if dest.exists():
        trash = dest.with_name(f".{dest.name}.trash")
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(dest, trash)
        os.rename(staging, dest)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(staging, dest)
    return {"kind": "directory", "path": str(dest)}


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_latest(ws: Workspace, tag: str) -> None:
    """Point `<directory>/latest.json` at tag (atomically)."""
    path = directory(ws) / LATEST
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{LATEST}.{os.getpid()}.part")
    part.write_text(json.dumps({"tag": tag}) + "\n", encoding="utf-8")
    os.replace(part, path)


def mismatches(dest: Path, found: list[Artifact]) -> list[str]:
    """One line per recorded file that is missing under dest or differs in size or digest."""
    problems = []
    for a in found:
        path = dest / a.path
        if not path.is_file() or path.is_symlink():
            problems.append(f"{a.path}: missing from {dest}")
            continue
        digest = sha256_file(path)
        if path.stat().st_size != a.size or digest != a.sha256:
            problems.append(f"{a.path}: sha256 {digest}, recorded {a.sha256}")
    return problems

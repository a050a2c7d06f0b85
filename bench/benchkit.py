"""What every benchmark script shares: an isolated git and a record of what was measured."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any


def isolate_git(directory: Path) -> None:
    """Point every git call at a throwaway global config; no system config, no prompts."""
    cfg = directory / "gitconfig"
    cfg.write_text(
        "[user]\n\tname = lockstep bench\n\temail = bench@localhost\n"
        "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n",
        encoding="utf-8",
    )
    os.environ["GIT_CONFIG_GLOBAL"] = str(cfg)
    os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
    os.environ["GIT_TERMINAL_PROMPT"] = "0"
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        os.environ.pop(name, None)


def git_version() -> str:
    """`git version 2.x.y`."""
    return subprocess.run(["git", "--version"], capture_output=True, text=True,
                          check=False).stdout.strip()


def source_info() -> dict[str, Any]:
    """Which lockstep was measured: its path, version, commit and whether src/ had local
    changes (a figure from uncommitted code says so)."""
    import lockstep

    src = Path(lockstep.__file__).resolve().parent

    def git_out(*args: str) -> str | None:
        proc = subprocess.run(["git", *args], cwd=src, capture_output=True, text=True,
                              check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git_out("rev-parse", "HEAD")
    status = git_out("status", "--porcelain", "--", ".") if commit else None
    return {"path": str(src), "commit": commit, "version": lockstep.__version__,
            "uncommitted_changes": None if status is None else bool(status)}


def prepare(prefix: str, tmp: Path | None, root: Path) -> Path:
    """A fresh work directory with git isolated in it, and lockstep importable: the installed
    (or PYTHONPATH) one wins, else this checkout's src/."""
    import sys
    import tempfile

    work = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp)).resolve()
    isolate_git(work)
    try:
        import lockstep  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(root / "src"))
    return work


def write_result(path: Path, doc: dict[str, Any]) -> None:
    """Write a result document as indented JSON and say where."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def source_label(source: dict[str, Any]) -> str:
    """The measured lockstep in a few words: its commit (and whether src/ had local changes)."""
    if not source["commit"]:
        return str(source["path"])
    return str(source["commit"])[:12] + (" + local changes" if source["uncommitted_changes"]
                                         else "")


def build_component(remotes: Path, sources: Path, name: str, versions: list[str]) -> str:
    """A component's bare remote under `remotes` (its clone under `sources`) with one commit and
    annotated tag per version, in order; returns the first version's SHA."""
    from lockstep import git

    bare = remotes / f"{name}.git"
    git.run(["init", "--quiet", "--bare", "--initial-branch=main", str(bare)])
    src = sources / name
    git.run(["init", "--quiet", "--initial-branch=main", str(src)])
    first = ""
    for version in versions:
        (src / "VERSION").write_text(f"{name} {version}\n", encoding="utf-8")
        (src / f"{name}.py").write_text(f'VERSION = "{version}"\n', encoding="utf-8")
        git.run(["add", "--all"], src)
        git.run(["commit", "--quiet", "-m", f"{name} {version}"], src)
        git.run(["tag", "-a", version, "-m", f"{name} {version}"], src)
        first = first or git.out(["rev-parse", "HEAD"], src)
    git.run(["push", "--quiet", str(bare), "main", "--tags"], src)
    return first

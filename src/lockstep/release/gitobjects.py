"""Git objects of a release, built in a bare cache without a work tree (so a crash leaves at
most unreferenced objects): trees with edited files, pin commits, tag objects."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lockstep import git
from lockstep.errors import PinNotFoundError, PinPathError

REGULAR_MODES = ("100644", "100755")


def blob_at(repo: Path, commit: str, path: str) -> tuple[str, bytes]:
    """(mode, bytes) of a regular file at a commit; PinPathError when a prefix is not a tree
    (a symlink or submodule on the way) or the file is not a regular blob."""
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        listing = git.run(["ls-tree", "-z", commit, "--", sub], repo).stdout.decode()
        entry = next((e for e in listing.split("\0") if e.endswith(f"\t{sub}")), None)
        if entry is None:
            raise PinNotFoundError(f"{path} does not exist at {commit[:12]}",
                                   "fix the pin's `file` (paths are relative to the repository)")
        mode, kind, sha = entry.split("\t", 1)[0].split(" ")
        last = i == len(parts)
        if mode == "120000":
            raise PinPathError(f"{path}: {sub} is a symbolic link at {commit[:12]}",
                               "pin the file the link points to, inside the repository")
        if mode == "160000":
            raise PinPathError(f"{path}: {sub} is a submodule at {commit[:12]}",
                               "pin files of the submodule's own repository instead")
        if (not last and kind != "tree") or (last and mode not in REGULAR_MODES):
            raise PinPathError(f"{path}: {sub} is not a {'directory' if not last else 'file'} "
                               f"at {commit[:12]}", "fix the pin's `file`")
        if last:
            return mode, git.run(["cat-file", "blob", sha], repo).stdout
    raise AssertionError("unreachable")


def tree_with_files(repo: Path, base: str, files: dict[str, tuple[str, bytes]]) -> str:
    """The tree of `base` with files replaced (path → (mode, bytes)), via a scratch index."""
    with tempfile.TemporaryDirectory(prefix="lockstep-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git.run(["read-tree", base], repo, env=env)
        for path, (mode, data) in sorted(files.items()):
            blob = git.out(["hash-object", "-w", "--stdin"], repo, input=data)
            git.run(["update-index", "--cacheinfo", f"{mode},{blob},{path}"], repo, env=env)
        return git.out(["write-tree"], repo, env=env)


def commit_message(repo: Path, commit: str) -> str:
    """The full message of a commit."""
    return git.out(["log", "-1", "--format=%B", commit], repo)


def parents(repo: Path, commit: str) -> list[str]:
    """The parents of a commit."""
    return git.out(["rev-list", "--parents", "-n", "1", commit], repo).split()[1:]

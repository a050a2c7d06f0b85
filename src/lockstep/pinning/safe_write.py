"""Reading and replacing a file to pin on disk (spec §6.3, §6.4): the path stays inside the
enclosing git work tree with no symlink component, every directory is opened with
O_NOFOLLOW | O_DIRECTORY, and the new bytes go to an O_EXCL temporary file (mode and owner
kept) that is fsynced and renamed over the file, then the directory is fsynced."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lockstep.errors import PinPathError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def work_tree(start: Path) -> Path:
    """The git work tree holding `start` (a directory with a `.git` entry), else `start`."""
    for candidate in (start, *start.parents):
        if os.path.lexists(candidate / ".git"):
            return candidate
    return start


@dataclass(frozen=True)
class Target:
    """A file to pin: the work tree, the path inside it, and the name to show."""

    root: Path
    rel: PurePosixPath
    shown: str


def resolve(arg: str, cwd: Path | None = None) -> Target:
    """Normalise FILE and check it stays inside the enclosing work tree through no symlink;
    PinPathError otherwise."""
    here = Path(os.getcwd()) if cwd is None else cwd
    root = work_tree(here)
    full = Path(os.path.normpath(here / arg))
    shown = os.path.normpath(arg)
    try:
        rel = PurePosixPath(full.relative_to(root).as_posix())
    except ValueError:
        raise PinPathError(f"{shown}: outside the work tree {root}",
                           "pin files inside the repository you run lockstep in") from None
    if not rel.parts:
        raise PinPathError(f"{shown}: is the work tree itself", "name a file")
    current = root
    for part in rel.parts:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            raise PinPathError(f"{shown}: no such file", "check the path") from None
        if stat.S_ISLNK(st.st_mode):
            raise PinPathError(f"{shown}: {current.relative_to(root)} is a symbolic link",
                               "pin the file the link points to, by its real path")
    if not stat.S_ISREG(st.st_mode):
        raise PinPathError(f"{shown}: not a regular file", "name a regular file")
    return Target(root, rel, shown)


@contextlib.contextmanager
def _directory(target: Target) -> Iterator[int]:
    """A descriptor of the file's directory, each component opened without following links."""
    fd = os.open(target.root, _DIR_FLAGS)
    try:
        for part in target.rel.parts[:-1]:
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise PinPathError(f"{target.shown}: cannot open directory {part!r} without "
                                   f"following links: {exc.strerror}",
                                   "the path must not cross a symbolic link") from None
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def _checked(target: Target, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise PinPathError(f"{target.shown}: not a regular file", "name a regular file")
    if st.st_nlink > 1:
        raise PinPathError(f"{target.shown}: has {st.st_nlink} hard links",
                           "a pin would change every linked name; break the link first")


def read(target: Target) -> bytes:
    """The file's bytes, read through O_NOFOLLOW descriptors; a hard-linked file is refused."""
    with _directory(target) as dfd:
        try:
            fd = os.open(target.rel.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
        except OSError as exc:
            raise PinPathError(f"{target.shown}: cannot open: {exc.strerror}",
                               "the file must be a regular file, not a link") from None
        with os.fdopen(fd, "rb") as fh:
            _checked(target, os.fstat(fh.fileno()))
            return fh.read()


def replace(target: Target, data: bytes) -> None:
    """Write `data` over the file atomically, keeping its mode (and owner, when root)."""
    name = target.rel.name
    with _directory(target) as dfd:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        _checked(target, st)
        tmp = f".{name}.lockstep-{os.getpid()}-{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fchmod(fh.fileno(), stat.S_IMODE(st.st_mode))
                if os.geteuid() == 0:
                    os.fchown(fh.fileno(), st.st_uid, st.st_gid)
                os.fsync(fh.fileno())
            now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
                raise PinPathError(f"{target.shown}: replaced while pinning", "run it again")
            _checked(target, now)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        os.fsync(dfd)

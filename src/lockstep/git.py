"""A typed wrapper over the git CLI: no shell, no prompts, validated names, redacted errors.

Every call runs `git` with stdin closed, terminal prompts off and a timeout; failures raise
GitError whose message has credentials removed from any URL.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockstep import names, transport
from lockstep.errors import GitError
from lockstep.transport import Settings

DEFAULT_TIMEOUT = 120.0
MAX_CAUSE = 500
_CAUSE_PREFIXES = ("fatal:", "error:")
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s]*@")
_AUTH_HEADER = re.compile(r"(?i)(authorization:\s*)(?:([a-z][a-z0-9_-]*)\s+)?[^\s\"']+")


def redact(text: str) -> str:
    """Remove user:password from URLs and Authorization header values."""
    text = _CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _AUTH_HEADER.sub(
        lambda m: f"{m.group(1)}{m.group(2) + ' ' if m.group(2) else ''}***", text
    )


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for every git call: prompts disabled, batch-mode SSH."""
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GCM_INTERACTIVE"] = "never"
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    env.pop("GIT_INDEX_FILE", None)
    if extra:
        env.update(extra)
    return env


def run(
    args: Sequence[str],
    cwd: Path | None = None,
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run `git ARGS` and return the completed process; raise GitError on failure when check."""
    cmd = ["git", *args]
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env=base_env(env),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {redact(' '.join(args[:3]))} timed out after {timeout:.0f}s") from None
    except FileNotFoundError as exc:
        if shutil.which("git") is None:
            raise GitError("git is not installed", "install git 2.30 or newer") from None
        raise GitError(f"cannot run git in {cwd}: {exc.strerror}") from None
    if check and proc.returncode != 0:
        cause = stderr_cause(proc.stderr) or f"exit code {proc.returncode}"
        label = " ".join([a for a in args if a != "--"][:2])
        raise GitError(f"git {redact(label)} failed: {cause}")
    return proc


def stderr_cause(stderr: bytes, limit: int = MAX_CAUSE) -> str:
    """git's own reason for a failure, on one redacted line: its `fatal:` and `error:` lines
    (else its last line), without the generic advice git adds after them; bounded."""
    lines = [" ".join(line.split()) for line in stderr.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    causes = [line.split(":", 1)[1].strip() for line in lines if line.startswith(_CAUSE_PREFIXES)]
    if not causes:
        causes = lines[-1:]
    text = redact("; ".join(dict.fromkeys(causes)))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def out(args: Sequence[str], cwd: Path | None = None, **kw: object) -> str:
    """Run git and return stripped stdout text."""
    return run(args, cwd, **kw).stdout.decode().strip()  # type: ignore[arg-type]


@dataclass(frozen=True)
class Identity:
    """Name, email and timestamp used for commits and tags; fixed so objects are reproducible."""

    name: str
    email: str
    timestamp: int

    def line(self) -> str:
        """`Name <email> 1700000000 +0000` as in commit and tag headers."""
        return f"{self.name} <{self.email}> {self.timestamp} +0000"

    def env(self) -> dict[str, str]:
        """Author and committer variables for git commit-tree."""
        date = f"{self.timestamp} +0000"
        return {
            "GIT_AUTHOR_NAME": self.name,
            "GIT_AUTHOR_EMAIL": self.email,
            "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": self.name,
            "GIT_COMMITTER_EMAIL": self.email,
            "GIT_COMMITTER_DATE": date,
        }


def rev_parse(repo: Path, rev: str) -> str | None:
    """The object a revision names, or None when it does not resolve.

    A full 40-hex SHA resolves to itself even if the object is missing (git's rule): use
    `has_object` for existence, or pass `SHA^{commit}`.
    """
    proc = run(["rev-parse", "--verify", "--quiet", rev], repo, check=False)
    return proc.stdout.decode().strip() or None if proc.returncode == 0 else None


def has_object(repo: Path, sha: str) -> bool:
    """Whether the repository holds the object."""
    return run(["cat-file", "-e", sha], repo, check=False).returncode == 0


def is_commit(repo: Path, sha: str) -> bool:
    """Whether the repository holds the object and it is a commit."""
    return run(["cat-file", "-e", f"{sha}^{{commit}}"], repo, check=False).returncode == 0


def show_file(repo: Path, commit: str, path: str) -> bytes:
    """The bytes of a file at a commit."""
    names.relative_path(path)
    return run(["show", f"{commit}:{path}"], repo).stdout


def tree_of(repo: Path, commit: str) -> str:
    """The tree SHA of a commit."""
    return out(["rev-parse", f"{commit}^{{tree}}"], repo)


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    """Whether `ancestor` is reachable from `descendant`."""
    proc = run(["merge-base", "--is-ancestor", ancestor, descendant], repo, check=False)
    if proc.returncode not in (0, 1):
        raise GitError(f"git merge-base failed: {stderr_cause(proc.stderr)}")
    return proc.returncode == 0


def first_parent_range(repo: Path, since: str, until: str) -> list[str]:
    """The first-parent commits in since..until, oldest first."""
    text = out(["rev-list", "--first-parent", "--reverse", f"{since}..{until}"], repo)
    return text.split()


def trailers(repo: Path, commit: str, key: str) -> list[str]:
    """The values of one trailer key in a commit's message (e.g. Lockstep-Item)."""
    fmt = f"%(trailers:key={key},valueonly,separator=%x00)"
    text = out(["log", "-1", f"--format={fmt}", commit], repo)
    return [v.strip() for v in text.split("\0") if v.strip()]


def tree_with_file(repo: Path, base: str, path: str, content: bytes, index: Path) -> str:
    """The tree of `base` with one file replaced, written without touching any work tree."""
    names.relative_path(path)
    env = {"GIT_INDEX_FILE": str(index)}
    blob = out(["hash-object", "-w", "--stdin"], repo, input=content)
    run(["read-tree", base], repo, env=env)
    run(["update-index", "--add", "--cacheinfo", f"100644,{blob},{path}"], repo, env=env)
    tree = out(["write-tree"], repo, env=env)
    index.unlink(missing_ok=True)
    return tree


def commit_tree(repo: Path, tree: str, parent: str, message: str, who: Identity) -> str:
    """Create a commit object (same inputs → same SHA)."""
    return out(
        ["commit-tree", tree, "-p", parent, "-F", "-"],
        repo,
        input=message.encode(),
        env=who.env(),
    )


def make_tag(repo: Path, name: str, commit: str, message: str, who: Identity) -> str:
    """Create the annotated tag object and ref (same inputs → same SHA); reuse an identical one."""
    names.ref_name(name, "tag name")
    body = (
        f"object {commit}\ntype commit\ntag {name}\ntagger {who.line()}\n\n"
        f"{message.rstrip()}\n"
    )
    sha = out(["mktag"], repo, input=body.encode())
    ref = f"refs/tags/{name}"
    if run(["update-ref", ref, sha, "0" * 40], repo, check=False).returncode == 0:
        return sha
    existing = rev_parse(repo, ref)
    if existing == sha:
        return sha
    if existing is not None:
        run(["update-ref", "-d", ref, existing], repo)
    run(["update-ref", ref, sha, "0" * 40], repo)
    return sha


def delete_local_tag(repo: Path, name: str) -> None:
    """Delete a local tag ref if it exists."""
    names.ref_name(name, "tag name")
    if rev_parse(repo, f"refs/tags/{name}"):
        run(["update-ref", "-d", f"refs/tags/{name}"], repo)


def ls_remote(repo: Path, remote: str, *patterns: str,
              settings: Settings | None = None) -> dict[str, str]:
    """Refs on a remote (peeled tags as `name^{}`), by full ref name."""
    refs: dict[str, str] = {}
    args = ["ls-remote", "--", remote, *patterns]
    done = _remote_run(args, repo, remote, timeout=transport.LOOKUP_TIMEOUT, settings=settings)
    for line in done.stdout.decode().strip().splitlines():
        sha, _, ref = line.partition("\t")
        refs[ref] = sha
    return refs


def fetch(repo: Path, remote: str, *refspecs: str, settings: Settings | None = None) -> None:
    """Fetch refspecs from a remote (name or URL)."""
    args = ["fetch", "--quiet", "--no-tags", "--", remote, *refspecs]
    _remote_run(args, repo, remote, timeout=transport.TRANSFER_TIMEOUT, settings=settings)


def push(repo: Path, remote: str, refspecs: Sequence[str], *, lease: str | None = None,
         atomic: bool = True, settings: Settings | None = None) -> None:
    """Push refspecs; with `lease` (`ref:expected`) only if the remote ref is exactly that."""
    args = ["push", "--quiet", "--porcelain"]
    if atomic:
        args.append("--atomic")
    if lease:
        args.append(f"--force-with-lease={lease}")
    proc = _remote_run([*args, "--", remote, *refspecs], repo, remote, push=True, check=False,
                       timeout=transport.TRANSFER_TIMEOUT, settings=settings)
    if proc.returncode == 0:
        return
    # The remote's own reason lives in `remote:` lines (hooks, branch protection) and in the
    # porcelain `!` lines (`[remote rejected] (pre-receive hook declined)`); keep both.
    said = [" ".join(line.split()[1:]) for line in
            proc.stderr.decode(errors="replace").splitlines() if line.startswith("remote:")]
    refused = [line.split("\t")[-1] for line in
               proc.stdout.decode(errors="replace").splitlines() if line.startswith("!")]
    causes = [c for c in [*said, *refused] if c] or [stderr_cause(proc.stderr)]
    text = redact("; ".join(dict.fromkeys(causes)))
    raise GitError(f"git push failed: {text[:MAX_CAUSE]}")


def _remote_run(args: Sequence[str], cwd: Path, remote: str, *, timeout: float,
                push: bool = False, check: bool = True,
                settings: Settings | None = None) -> subprocess.CompletedProcess[bytes]:
    """`run` for a command that talks to a remote: through the transport layer's child and
    environment (own session, no prompts, only the remote's protocol, its credentials)."""
    done = transport.run_single(args, cwd, remote, timeout=timeout, push=push,
                                settings=settings)
    if done.timed_out:
        raise GitError(f"git {redact(' '.join(args[:3]))} timed out after {timeout:.0f}s")
    if check and done.returncode != 0:
        cause = stderr_cause(done.stderr) or f"exit code {done.returncode}"
        label = " ".join([a for a in args if a != "--"][:2])
        raise GitError(f"git {redact(label)} failed: {cause}")
    return subprocess.CompletedProcess(list(done.argv), done.returncode, done.stdout, done.stderr)

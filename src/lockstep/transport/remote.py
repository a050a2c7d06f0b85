"""A repository's remote: its URLs in order (url, then ssh_url), tried with §4.2's fallback.

Only an authentication or transport failure moves on to the next URL; a refusal (a rejected
push, a declined hook, a changed host key) is final. After a fallback the URL that worked is
tried first for the rest of the run (`preferred`, for the journal to keep as a hint); `notes`
keeps the redacted cause of each fallback. Both URLs failing is one TransportError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockstep import names
from lockstep.errors import GitError, TransportError
from lockstep.transport import child as child_mod
from lockstep.transport import env as env_mod
from lockstep.transport import urls as urls_mod
from lockstep.transport.child import Child
from lockstep.transport.classify import Verdict, cause, classify, remote_lines
from lockstep.transport.settings import Settings

NEUTRAL_CWD = Path("/")  # ls-remote needs no repository; none of the caller's config applies
_LOG = logging.getLogger("lockstep.transport")
_HINT = ('check the URLs, the network, and the credentials and ca_file under [git."host"] '
         "in lockstep.toml")


@dataclass(frozen=True)
class RemoteRef:
    """A ref as `ls-remote` lists it: its object, and the commit it peels to (a tag's `^{}`
    line; the object itself for a lightweight tag or a branch)."""

    name: str
    object: str
    peeled: str


@dataclass(frozen=True)
class PushedRef:
    """One `push --porcelain` status line: flag (`*` new, `=` up to date, `!` refused, …)."""

    flag: str
    source: str
    target: str
    summary: str


@dataclass(frozen=True)
class Attempt:
    """One git child run against one URL: for notes, timings and tests."""

    url: str
    action: str
    seconds: float
    verdict: Verdict | None  # None: it succeeded
    cause: str = ""
    pid: int = 0  # the git child's pid, also its process group and session id


class PushRejectedError(GitError):
    """The remote refused a pushed ref (it exists, is not a fast-forward, a hook declined):
    final, no other URL is tried. `refused` lists the refused refs."""

    def __init__(self, message: str, hint: str | None, *, url: str,
                 refused: Sequence[PushedRef], said: Sequence[str]) -> None:
        super().__init__(message, hint)
        self.url = url
        self.refused = tuple(refused)
        self.said = tuple(said)


class Remote:
    """One repository reached through its URLs; every remote git command goes through here."""

    def __init__(self, name: str, urls: Sequence[str], settings: Settings | None = None, *,
                 prefer: str | None = None, warn: Callable[[str], None] | None = None) -> None:
        if not urls:
            raise GitError(f"{name} has no URL", "set url (and optionally ssh_url)")
        self.name = name
        self.urls = tuple(dict.fromkeys(urls))
        self.settings = settings or Settings()
        insecure = self.settings.allowed_insecure()
        self._parsed = {u: urls_mod.parse(u, insecure) for u in self.urls}
        self._preferred = prefer if prefer in self.urls else self.urls[0]
        self._warn = warn or (lambda text: _LOG.warning("warning: %s", text))
        self._redact = self.settings.redactor()
        self.notes: list[str] = []
        self.attempts: list[Attempt] = []

    @property
    def preferred(self) -> str:
        """The URL tried first: `url`, or the one a fallback reached (sticky for the run)."""
        return self._preferred

    @property
    def transport(self) -> str:
        """The preferred URL's scheme (`https`, `ssh`, `file`, …), as status shows it."""
        return self._parsed[self._preferred].scheme

    def order(self) -> list[str]:
        """The URLs in the order the next command tries them."""
        return [self._preferred, *(u for u in self.urls if u != self._preferred)]

    # --- commands ----------------------------------------------------------------------------

    def ls_remote(self, refs: Sequence[str], cwd: Path | None = None) -> dict[str, RemoteRef]:
        """Look up full ref names (`refs/tags/T`, `refs/heads/B`): the ones present, by name.

        Only exact names count (git's patterns also match ref tails such as `refs/tags/x/T`);
        `--exit-code`'s status 2 means none is present.
        """
        wanted = [names.ref_name(r, "ref") for r in refs]
        if not wanted or any(not r.startswith("refs/") for r in wanted):
            raise GitError(f"ls_remote takes full ref names, not {list(refs)!r}")
        patterns = [p for r in wanted for p in (r, f"{r}^{{}}")]
        _, done = self._run(f"look up {', '.join(wanted)}",
                            lambda url: ["ls-remote", "--exit-code", "--", url, *patterns],
                            cwd, self.settings.lookup_timeout, ok=(0, 2))
        listed = _parse_listing(done.stdout) if done.returncode == 0 else {}
        found = {}
        for ref in wanted:
            if ref in listed:
                found[ref] = RemoteRef(ref, listed[ref], listed.get(f"{ref}^{{}}", listed[ref]))
        return found

    def list_refs(self, cwd: Path | None = None) -> dict[str, str]:
        """Every ref of the remote as `ls-remote` prints it (peeled tags as `name^{}`)."""
        _, done = self._run("list the refs", lambda url: ["ls-remote", "--", url],
                            cwd, self.settings.lookup_timeout)
        return _parse_listing(done.stdout)

    def fetch(self, repo: Path, refspecs: Sequence[str], *, what: str | None = None) -> str:
        """Fetch refspecs into `repo` (no tags beyond those named); returns the URL used."""
        specs = [_refspec(s) for s in refspecs]
        url, _ = self._run(what or f"fetch {_summary(specs)}",
                           lambda url: ["fetch", "--quiet", "--no-tags", "--", url, *specs],
                           repo, self.settings.transfer_timeout)
        return url

    def push(self, repo: Path, refspecs: Sequence[str], *, what: str | None = None,
             atomic: bool = False) -> list[PushedRef]:
        """Push refspecs, never forced; a refused ref raises PushRejectedError (final)."""
        specs = [_refspec(s) for s in refspecs]
        if any(s.startswith("+") for s in specs):
            raise GitError(f"refusing to force-push {_summary(specs)} of {self.name}",
                           "lockstep never forces a push")
        extra = ["--atomic"] if atomic else []
        _, done = self._run(what or f"push {_summary(specs)}",
                            lambda url: ["push", "--porcelain", *extra, "--", url, *specs],
                            repo, self.settings.transfer_timeout)
        return _parse_porcelain(done.stdout)

    # --- the fallback ------------------------------------------------------------------------

    def _run(self, action: str, argv: Callable[[str], list[str]], cwd: Path | None,
             timeout: float, ok: tuple[int, ...] = (0,)) -> tuple[str, Child]:
        """Run the command against each URL in order until one succeeds or fails finally."""
        failed: list[tuple[str, str]] = []
        order = self.order()
        for i, url in enumerate(order):
            env = env_mod.build([self._parsed[url]], self.settings, cwd=cwd, warn=self._warn)
            done = child_mod.run(["git", *argv(url)], cwd or NEUTRAL_CWD, env, timeout)
            if done.returncode in ok and not done.timed_out:
                self.attempts.append(Attempt(url, action, done.seconds, None, pid=done.pid))
                if i > 0:
                    self._preferred = url
                return url, done
            verdict = classify(done)
            why = cause(done, self._redact, with_remote=verdict is Verdict.TRANSPORT)
            self.attempts.append(Attempt(url, action, done.seconds, verdict, why, done.pid))
            if verdict is Verdict.FINAL:
                raise self._final(action, url, done, why, failed)
            failed.append((url, why))
            if i + 1 < len(order):
                self.notes.append(self._redact(
                    f"{action} of {self.name}: {url} failed ({why}); trying {order[i + 1]}"))
        lines = [f"cannot {action} of {self.name}", *(f"  {u}: {w}" for u, w in failed)]
        raise TransportError(self._redact("\n".join(lines)), _HINT)

    def _final(self, action: str, url: str, done: Child, why: str,
               failed: list[tuple[str, str]]) -> GitError:
        """The error for a failure no other URL can fix, with any earlier URLs' causes."""
        said = remote_lines(done, self._redact)
        refused = [p for p in _parse_porcelain(done.stdout) if p.flag == "!"]
        if refused:
            why = "; ".join(f"{p.target or p.source} {p.summary}" for p in refused)
        lines = [f"cannot {action} of {self.name}", *(f"  {u}: {w}" for u, w in failed),
                 f"  {url}: {why}", *(f"    remote: {s}" for s in said)]
        message = self._redact("\n".join(lines))
        if refused:
            return PushRejectedError(message, "the remote refused the push; nothing was forced",
                                     url=url, refused=refused, said=said)
        return GitError(message, _HINT)


def _parse_listing(stdout: bytes) -> dict[str, str]:
    refs: dict[str, str] = {}
    for line in stdout.decode(errors="replace").splitlines():
        sha, _, ref = line.partition("\t")
        if ref:
            refs[ref] = sha
    return refs


def _parse_porcelain(stdout: bytes) -> list[PushedRef]:
    """`<flag>\\t<from>:<to>\\t<summary>` lines of `git push --porcelain`."""
    found = []
    for line in stdout.decode(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and len(parts[0]) == 1:
            source, _, target = parts[1].partition(":")
            found.append(PushedRef(parts[0], source, target, parts[2]))
    return found


def _refspec(spec: str) -> str:
    if not spec or spec.startswith("-") or any(c.isspace() or ord(c) < 32 for c in spec):
        raise GitError(f"invalid refspec {spec!r}", "a refspec is `src:dst` without spaces")
    return spec


def _summary(specs: Sequence[str]) -> str:
    """`tag v1` / `branch main` / the refspecs, for `cannot <action> of <repository>`."""
    if len(specs) == 1:
        dst = specs[0].lstrip("+").rpartition(":")[2]
        for prefix, kind in (("refs/tags/", "tag"), ("refs/heads/", "branch")):
            if dst.startswith(prefix) and "*" not in dst:
                return f"{kind} {dst.removeprefix(prefix)}"
    return ", ".join(specs)


def run_single(args: Sequence[str], cwd: Path | None, remote: str, *, timeout: float,
               push: bool = False, settings: Settings | None = None,
               warn: Callable[[str], None] | None = None) -> Child:
    """Run `git ARGS` against one remote, a configured name or a URL, in the transport's
    child and environment but without fallback (the integration remote has one URL).

    A name's URLs are those git would use (`remote get-url --all`, `--push` for a push,
    insteadOf applied), so GIT_ALLOW_PROTOCOL names exactly their schemes.
    """
    settings = settings or Settings()
    urls = _remote_urls(cwd, remote, push) or [remote]
    insecure = settings.allowed_insecure()
    parsed = [urls_mod.parse(u, insecure) for u in urls]
    env = env_mod.build(parsed, settings, cwd=cwd,
                        warn=warn or (lambda text: _LOG.warning("warning: %s", text)))
    return child_mod.run(["git", *args], cwd or NEUTRAL_CWD, env, timeout)


def _remote_urls(cwd: Path | None, remote: str, push: bool) -> list[str]:
    """The URLs of a configured remote name; empty when `remote` is a URL or path."""
    if not names_like_remote(remote) or cwd is None:
        return []
    done = child_mod.run(["git", "remote", "get-url", "--all", *(["--push"] if push else []),
                          "--", remote], cwd, env_mod.build([], Settings(), cwd=None,
                                                            warn=lambda _: None), 30.0)
    if not done.ok:
        return []
    return [u for u in done.stdout.decode(errors="replace").splitlines() if u]


def names_like_remote(text: str) -> bool:
    """Whether git could read `text` as a remote's name rather than a URL or path."""
    return bool(text) and not text.startswith("-") and "/" not in text and ":" not in text

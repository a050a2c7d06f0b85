"""Building one integration release's distribution: a stage-like workspace of the tag, the
configured command under its timeout, the artifacts recorded, then published.

Every step is journalled (lockstep.distribution.journal) before it is taken, so a process
killed at any point leaves a row the next `queue run` (or `dist build`) carries on from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from lockstep import faults, git
from lockstep.distribution import journal, publish
from lockstep.distribution.journal import Artifact
from lockstep.distribution.publish import sha256_file
from lockstep.errors import InfrastructureFault, LockstepError, StageError, TransportError
from lockstep.queue import notify
from lockstep.queue.store import HOST, Store, pid_matches
from lockstep.stages import (
    Outcome,
    kill_orphaned_group,
    prepare_workspace,
    process_started,
    run_command,
    secret_env_names,
    stage_environment,
    tail,
)
from lockstep.workspace import Workspace

_NO_INFRA_EXIT = 256  # no exit code means "infrastructure" for a distribution command
_LOG_TAIL = 50
BACKOFF_S = 5.0  # the first automatic retry after an infrastructure fault; doubles per try
BACKOFF_MAX_S = 600.0


def configured(ws: Workspace) -> bool:
    """Whether lockstep.toml asks for distributions."""
    return ws.config.distribution.command is not None


def work_dir(ws: Workspace, tag: str) -> Path:
    """Where tag's workspace and built artifacts live until published."""
    return ws.state_dir / "dist-work" / tag


def record_path(ws: Workspace, tag: str) -> Path:
    """The JSON record of tag's distribution (under .lockstep/, committed nowhere)."""
    return ws.state_dir / "distributions" / f"{tag}.json"


def log_path(ws: Workspace, tag: str, attempt: int) -> Path:
    """The build log of one attempt."""
    return ws.logs_dir / "dist" / tag / f"build.{attempt}.log"


def _me() -> tuple[str, float]:
    return f"{HOST}:{os.getpid()}", psutil.Process().create_time()


def _holder_alive(holder: str | None, started: float | None) -> bool:
    """Whether another live process on this host holds the row (the queue's pid-and-start-time
    check: an exited, reused or zombie pid is dead)."""
    if holder is None or started is None:
        return False
    host, _, pid = holder.rpartition(":")
    if host != HOST or int(pid) == os.getpid():
        return False
    return pid_matches(int(pid), started)


def complete_unfinished(ws: Workspace, store: Store,
                        log: Callable[[str], None] = lambda _m: None) -> list[str]:
    """Build and publish every release whose distribution is pending or was interrupted,
    oldest first; returns the tags handled. A failure is recorded, never raised."""
    with store.read() as c:
        todo = [r["tag"] for r in journal.unfinished(c, now=time.time())]
    done = []
    for tag in todo:
        try:
            state = build(ws, store, tag, log=log)
        except LockstepError as exc:  # the repo or store could not be read: the next run retries
            log(f"distribution {tag}: {exc.one_line()}")
            continue
        if state is not None:
            done.append(tag)
    return done


def build(ws: Workspace, store: Store, tag: str, *, retry: bool = False,
          log: Callable[[str], None] = lambda _m: None) -> str | None:
    """Build and publish tag's distribution; returns its final state, or None when another live
    process holds it. A published or failed one is left alone unless retry (then rebuilt)."""
    holder, started = _me()
    with store.tx() as c:
        r = journal.row(c, tag)
        if r is None:
            landing = journal.landed(c, tag)
            journal.add_pending(c, tag, landing["id"], landing["item_seq"], landing["commit_sha"])
            r = journal.row(c, tag)
            assert r is not None
        if not retry and r["state"] in ("published", "failed"):
            return str(r["state"])
        if _holder_alive(r["holder"], r["holder_started"]):
            return None
        if r["pid"] is not None:  # a dead builder's command may still run: stop it
            kill_orphaned_group(r["pid"], r["pid_started"] or 0.0)
        resume_publish = r["state"] in ("built", "publishing") and (
            work_dir(ws, tag) / "out").is_dir()
        attempt = r["attempts"] if resume_publish else r["attempts"] + 1
        journal.set_state(c, tag, r["state"] if resume_publish else "building", holder=holder,
                          holder_started=started, pid=None, pid_started=None, attempts=attempt,
                          error=None, log=str(log_path(ws, tag, attempt)))
    try:
        if not resume_publish:
            log(f"distribution {tag}: building (attempt {attempt})")
            _build(ws, store, tag, r["commit_sha"], log_path(ws, tag, attempt))
        log(f"distribution {tag}: publishing")
        _publish(ws, store, tag)
    except InfrastructureFault as exc:
        return _infrastructure_fault(ws, store, tag, exc.one_line(), log_path(ws, tag, attempt),
                                     log)
    except (LockstepError, OSError) as exc:
        error = exc.one_line() if isinstance(exc, LockstepError) else f"{tag}: {exc}"
        _fail(ws, store, tag, error, log_path(ws, tag, attempt))
        log(f"distribution {tag}: failed: {error}")
        return "failed"
    log(f"distribution {tag}: published")
    return "published"


def _infrastructure_fault(ws: Workspace, store: Store, tag: str, error: str, log_file: Path,
                          log: Callable[[str], None]) -> str:
    """Not the release's fault: keep what was built and retry after a backoff; only when
    `[distribution] retries` automatic tries failed too is it failed and the owners told."""
    with store.tx() as c:
        r = journal.row(c, tag)
        assert r is not None
        tries = (r["infra_tries"] or 0) + 1
    if tries > ws.config.distribution.retries:
        error = (f"infrastructure fault, {tries} tries: {error}" if tries > 1
                 else f"infrastructure fault: {error}")
        _fail(ws, store, tag, error, log_file)
        log(f"distribution {tag}: failed: {error}")
        return "failed"
    wait = min(BACKOFF_S * 2 ** (tries - 1), BACKOFF_MAX_S)
    _append(log_file, f"lockstep: infrastructure fault, retry {tries} of "
                      f"{ws.config.distribution.retries} in {wait:g}s: {error}\n")
    state = "built" if r["state"] in ("built", "publishing") else "pending"
    with store.tx() as c:
        journal.set_state(c, tag, state, holder=None, holder_started=None, pid=None,
                          pid_started=None, error=error, infra_tries=tries,
                          retry_at=time.time() + wait)
    log(f"distribution {tag}: infrastructure fault, retry {tries} of "
        f"{ws.config.distribution.retries} in {wait:g}s: {error}")
    return state


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def tag_commit(ws: Workspace, tag: str) -> str:
    """The commit the tag names, read from the tag (fetched from the remote if missing here)."""
    ref = f"refs/tags/{tag}"
    commit = git.rev_parse(ws.root, f"{ref}^{{commit}}")
    if commit is None:
        try:
            git.fetch(ws.root, ws.remote, f"+{ref}:{ref}")
        except TransportError as exc:
            raise InfrastructureFault(f"cannot fetch tag {tag}: {exc.one_line()}",
                                      "check that the integration remote is reachable") from None
        commit = git.rev_parse(ws.root, f"{ref}^{{commit}}")
    if commit is None:
        raise StageError(f"tag {tag} is not in the integration repo nor on {ws.remote}",
                         "a distribution is built from its integration release tag")
    return commit


def _build(ws: Workspace, store: Store, tag: str, recorded: str, log: Path) -> None:
    """Prepare the tag's workspace, run the command, record the artifacts (state built)."""
    settings = ws.config.distribution
    assert settings.command is not None
    commit = tag_commit(ws, tag)
    if commit != recorded:
        raise StageError(f"tag {tag} now names {commit[:12]}, not the landed {recorded[:12]}",
                         "an integration release tag must never move; restore it")
    manifest = ws.manifest_at(commit)
    configuration = settings.configuration or manifest.configurations[0]
    if configuration not in manifest.configurations:
        raise StageError(f"[distribution] configuration {configuration!r} is not in the "
                         f"manifest of {tag}", "set it to one of: "
                         + ", ".join(manifest.configurations))
    tree = git.out(["rev-parse", f"{commit}^{{tree}}"], ws.root)
    base = work_dir(ws, tag)
    workdir, out = base / "workspace", base / "out"
    try:
        components = prepare_workspace(ws, tree, manifest.pins(configuration), workdir)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
    except (OSError, LockstepError) as exc:  # a disk or a component remote, not the release
        cause = exc.one_line() if isinstance(exc, LockstepError) else str(exc)
        raise InfrastructureFault(f"cannot prepare the workspace of {tag}: {cause}") from None
    env = stage_environment(os.environ, {
        "LOCKSTEP_MANIFEST": str(workdir / ws.manifest_path),
        "LOCKSTEP_CONFIG": configuration,
        "LOCKSTEP_WORKSPACE": str(workdir),
        "LOCKSTEP_COMPONENTS_DIR": str(components),
        "LOCKSTEP_RELEASE": tag,
        "LOCKSTEP_COMMIT": commit,
        "LOCKSTEP_DIST_DIR": str(out),
    }, [*ws.config.queue.pass_env, *settings.pass_env], deny=secret_env_names(ws.config))

    def started(pid: int) -> None:
        when = process_started(pid)
        if when is None:
            return
        with store.tx() as c:
            journal.set_values(c, tag, pid=pid, pid_started=when)
        faults.crashpoint("dist-during-build")

    result = run_command(settings.command, cwd=workdir, env=env, log=log,
                         timeout=settings.timeout, infra_exit_code=_NO_INFRA_EXIT,
                         kill_grace=ws.config.queue.kill_grace, on_start=started)
    if result.outcome == Outcome.TIMEOUT:
        raise StageError(f"the distribution command timed out after {settings.timeout:g}s")
    if result.outcome == Outcome.INFRA:
        raise StageError(f"the distribution command {settings.command[0]!r} could not start",
                         "check [distribution] command and PATH")
    if result.outcome != Outcome.PASSED:
        raise StageError(f"the distribution command exited {result.exit_code}")
    found = collect(out)
    digest = hashlib.sha256(manifest.text.encode()).hexdigest()
    with store.tx() as c:
        journal.replace_artifacts(c, tag, found)
        journal.set_state(c, tag, "built", pid=None, pid_started=None,
                          manifest_digest=f"sha256:{digest}")
    shutil.rmtree(workdir, ignore_errors=True)


def collect(out: Path) -> list[Artifact]:
    """Every regular file under out, with size and SHA-256; a symlink, a special file or an
    empty directory set is an error (a command may only write plain files into its directory)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(out):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(out).as_posix()
            if path.is_symlink():
                raise StageError(f"the distribution command wrote a symlink {rel} -> "
                                 f"{os.readlink(path)}", "write plain files into "
                                 "$LOCKSTEP_DIST_DIR; nothing outside it is published")
            if name in filenames:
                if not path.is_file():
                    raise StageError(f"the distribution command wrote {rel}, not a plain file",
                                     "write plain files into $LOCKSTEP_DIST_DIR")
                found.append(Artifact(rel, path.stat().st_size, sha256_file(path)))
    if not found:
        raise StageError("the distribution command produced no artifact",
                         "it must write its files into $LOCKSTEP_DIST_DIR")
    return sorted(found, key=lambda a: a.path)


def _publish(ws: Workspace, store: Store, tag: str) -> None:
    """Publish tag's built artifacts, then record it (state published) and its JSON file."""
    with store.tx() as c:
        journal.set_state(c, tag, "publishing")
        found = journal.artifacts_of(c, tag)
        built = journal.row(c, tag)
    assert built is not None
    out = work_dir(ws, tag) / "out"
    if ws.config.distribution.publish == "oci":
        from lockstep.distribution import oci

        try:
            where = oci.publish(ws, tag, out, found, built["manifest_digest"] or "")
        except OSError as exc:
            raise StageError(f"cannot read the built files of {tag}: {exc}") from None
    else:
        where = publish.publish_directory(ws, tag, out, found)
    with store.tx() as c:
        r = journal.row(c, tag)
        assert r is not None
        newest = journal.newest_published(c)
        journal.set_state(c, tag, "published", holder=None, holder_started=None,
                          published_to=json.dumps(where), error=None, infra_tries=0,
                          retry_at=None)
        r = journal.row(c, tag)
        assert r is not None
        record = journal.decode(r, found)
        if where["kind"] == "directory" and (newest is None or r["landing_id"] >= newest):
            publish.write_latest(ws, tag)  # an older tag never replaces a newer one's pointer
    write_record(ws, tag, record)
    shutil.rmtree(work_dir(ws, tag), ignore_errors=True)


def write_record(ws: Workspace, tag: str, record: dict[str, Any]) -> None:
    """Write tag's JSON record atomically (a reader sees the old or the new one)."""
    path = record_path(ws, tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(part, path)


def _fail(ws: Workspace, store: Store, tag: str, error: str, log: Path) -> None:
    """Record a failed build or publish with its log, and tell the integration repo's owners."""
    _append(log, f"lockstep: distribution failed: {error}\n")
    lines = tail(log, _LOG_TAIL)
    with store.tx() as c:
        r = journal.row(c, tag)
        assert r is not None
        journal.set_state(c, tag, "failed", holder=None, holder_started=None, pid=None,
                          pid_started=None, error=error, infra_tries=0, retry_at=None)
        notify.enqueue(store, c, ws.config, "distribution-failed", r["item_seq"], {
            "tag": tag, "commit": r["commit_sha"], "error": error, "log": str(log),
            "log_tail": lines, "owners": list(ws.config.integration.owners),
        })
    write_record(ws, tag, {"tag": tag, "state": "failed", "error": error, "log": str(log)})

"""`lockstep demo`: build the sample system, submit bumps, run the queue, cut a release, roll
the landed releases out to a local environment under a client's load, summarise.

Everything is local: bare git remotes under DIR/remotes, the integration repo at
DIR/integration. Running it again on the same DIR reuses what is there.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from lockstep import demo_system as sample
from lockstep import git
from lockstep.demo_artifacts import ArtifactHook, install_hook
from lockstep.demo_rollout import run_rollout
from lockstep.errors import LockstepError, UsageError
from lockstep.manifest import Pin, render_new
from lockstep.queue import operations as ops
from lockstep.queue.model import State
from lockstep.queue.store import Store
from lockstep.queue.worker import RunMode, Worker
from lockstep.scaffold import init
from lockstep.workspace import Workspace

MARKER = ".lockstep-demo"
BUILDING = ".lockstep-demo-building"
_IDENT = ["-c", "user.name=lockstep demo", "-c", "user.email=demo@localhost"]


def _publish(repo: Path, files: dict[str, str], message: str, tag: str | None) -> str:
    """Write files, commit, optionally tag, push; returns the commit SHA."""
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git.run(["add", "--all"], repo)
    git.run([*_IDENT, "commit", "--quiet", "-m", message], repo)
    refs = ["main"]
    if tag:
        git.run([*_IDENT, "tag", "-a", tag, "-m", f"{repo.name} {tag}"], repo)
        refs.append(f"refs/tags/{tag}")
    git.run(["push", "--quiet", "origin", *refs], repo)
    return git.out(["rev-parse", "HEAD"], repo)


def build(root: Path, log: Callable[[str], None]) -> Workspace:
    """Create the component remotes with their tagged versions and the integration repo."""
    remotes = root / "remotes"
    sources = root / "sources"
    first: dict[str, Pin] = {}
    for name, versions in sample.COMPONENTS.items():
        bare = remotes / f"{name}.git"
        git.run(["init", "--quiet", "--bare", "--initial-branch=main", str(bare)])
        src = sources / name
        git.run(["clone", "--quiet", str(bare), str(src)])
        git.run(["checkout", "--quiet", "-B", "main"], src)
        for version, files in versions:
            sha = _publish(src, files, f"{name} {version}", version)
            first.setdefault(name, Pin(version, sha))
        log(f"  component {name}: {', '.join(v for v, _ in versions)}")
    for name in sample.COMPONENTS:
        # Plays each component's CI: a tag push builds its image into the layout registry.
        install_hook(remotes / f"{name}.git", ArtifactHook(
            repository=f"demo/{name}", layout_root=root / "registry",
            tag_transform="strip-v", delay=1.0))
    log("  component CI hooks: a pushed tag builds its image into registry/ a moment later")
    integration_remote = remotes / "integration.git"
    git.run(["init", "--quiet", "--bare", "--initial-branch=main", str(integration_remote)])
    integration = root / "integration"
    manifest = render_new({"default": dict(first), "edge": dict(first)})
    init(integration, remote_url=None, config_text=sample.config_toml("../remotes"),
         manifest_text=manifest)
    extra = {
        "stages/unit.py": sample.STAGE_UNIT,
        "stages/contract.py": sample.STAGE_CONTRACT,
        "stages/smoke.py": sample.STAGE_SMOKE,
        "hooks/notify_owner.py": sample.NOTIFY_HOOK,
        "tools/dist.py": sample.DIST_SCRIPT,
        "checks/__init__.py": '"""The upgrade checks: the [scenarios] plugin."""\n',
        "checks/demo_checks.py": resources.files("lockstep").joinpath(
            "demo_checks.py").read_text(encoding="utf-8"),
    }
    git.run(["remote", "add", "origin", str(integration_remote)], integration)
    _publish(integration, extra, "Add stage scripts, upgrade checks, the owner notification "
             "hook and the distribution script", None)
    log("  integration repo with configurations default and edge, stages unit → contract → "
        "smoke → upgrade (checks in checks/demo_checks.py), distribution tools/dist.py")
    (root / MARKER).write_text("lockstep demo\n", encoding="utf-8")
    return Workspace.open(integration)


def run_demo(directory: Path | None, log: Callable[[str], None],
             on_workspace: Callable[[Path], None] | None = None) -> str:
    """Build (or reuse) the demo in directory, run the queue, return a summary; on_workspace
    gets the integration repo once it exists, before anything is submitted."""
    root = Path(tempfile.mkdtemp(prefix="lockstep-demo-")) if directory is None else directory
    root = root.resolve()
    if (root / MARKER).exists():
        log(f"reusing the demo system in {root}")
        ws = Workspace.open(root / "integration")
    else:
        if (root / BUILDING).exists():
            log(f"an earlier demo build in {root} was interrupted; building it again")
            for part in ("remotes", "sources", "integration"):
                shutil.rmtree(root / part, ignore_errors=True)
        elif root.exists() and any(root.iterdir()):
            raise UsageError(f"{root} is not empty and holds no lockstep demo",
                             "pass a new or empty directory, or omit it")
        log(f"building a sample distributed monolith in {root}")
        root.mkdir(parents=True, exist_ok=True)
        (root / BUILDING).write_text("lockstep demo build in progress\n", encoding="utf-8")
        ws = build(root, log)
        (root / BUILDING).unlink()
    store = ops.open_store(ws)
    if on_workspace is not None:
        on_workspace(ws.root)
    submitted = []
    log("submitting bumps:")
    with store.tx() as c:
        earlier = {(i.component, i.version): i for i in reversed(
            store.items(c, include_terminal=True))}
    for component, version in sample.SUBMISSIONS:
        item = earlier.get((component, version))
        if item is None:
            item = ops.submit(ws, store, component, version, [], 0)
            log(f"  {item.id} {component} {version} ({item.sha[:12]}): {item.state.value}")
        else:
            log(f"  {item.id} {component} {version}: submitted by an earlier run, "
                f"{item.state.value}")
        submitted.append(item.seq)
    log("running the queue until it is empty:")
    Worker(ws, store, log=lambda m: log(f"  {m}")).run(RunMode.UNTIL_EMPTY)
    summary = _summary(root, ws, store, submitted)
    release = _release(ws, log)
    return summary + "\n" + release + "\n" + run_rollout(ws, _landed(store, submitted), log)


def _landed(store: Store, seqs: list[int]) -> list[str]:
    """The integration release tags the submitted bumps landed as, in order."""
    with store.tx() as c:
        items = [store.item(c, s) for s in seqs]
    return [str(i.outcome["tag"]) for i in items if i.state == State.LANDED and i.outcome]


def _release(ws: Workspace, log: Callable[[str], None]) -> str:
    """Cut the newest integration release: tag, wait for each image, pin it downstream."""
    from lockstep.release.cut import cut
    from lockstep.release.status import render

    log("cutting a release of the newest integration release (tag, wait, pin, push):")
    try:
        result = cut(ws, handle_signals=False)
    except LockstepError as exc:
        return f"release: not cut: {exc.one_line()}"
    assert result.status is not None
    lines = ["", *render(result.status)]
    lines += [f"  look: lockstep release status -C {ws.root}",
              f"  look: git -C {ws.root.parent / 'remotes' / 'storefront.git'} show "
              f"{result.plan.version} --stat"]
    return "\n".join(lines)


def _summary(root: Path, ws: Workspace, store: Store, seqs: list[int]) -> str:
    lines = ["", f"Summary ({root})"]
    tags = []
    with store.tx() as c:
        items = [store.item(c, s) for s in seqs]
    for item in items:
        head = f"  {item.id} {item.component} {item.version}:"
        outcome = item.outcome or {}
        if item.state == State.LANDED:
            tags.append(outcome["tag"])
            lines.append(f"{head} landed, tagged {outcome['tag']}")
        elif item.state == State.REJECTED:
            lines.append(f"{head} REJECTED: {outcome.get('message')}")
            lines += [f"      | {line}" for line in _explanation(outcome.get("log_tail", []))]
        elif item.state == State.SKIPPED:
            lines.append(f"{head} skipped ({outcome.get('reason')})")
        else:
            lines.append(f"{head} {item.state.value}")
    lines.append(f"integration release tags created: {', '.join(tags) or 'none'}")
    lines += _distributions(ws, store, tags)
    notes = root / "notifications.jsonl"
    if notes.exists():
        events = [json.loads(x) for x in notes.read_text().splitlines() if x.strip()]
        rejected = sum(1 for e in events if e.get("event") == "rejected")
        lines.append(f"owner notifications so far: {len(events)} ({rejected} rejections) "
                     f"in {notes}")
    cd = f"-C {ws.root}"
    lines += [
        "look around:",
        f"  lockstep queue status {cd}",
        f"  lockstep manifest show {cd}",
        f"  lockstep queue logs q3 --stage contract {cd}",
        f"  lockstep queue logs q6 --stage upgrade {cd}",
        f"  git -C {ws.root} log --oneline --decorate",
    ]
    return "\n".join(lines)


def _distributions(ws: Workspace, store: Store, tags: list[str]) -> list[str]:
    """Per landed release, its distribution: state, each artifact's path and SHA-256, where it
    was published; then how to look at them."""
    from lockstep.distribution import journal

    if not tags:
        return []
    lines = ["distributions (tools/dist.py, after each landing):"]
    journal.ensure_tables(store)
    with store.read() as c:
        recorded = {t: (journal.row(c, t), journal.artifacts_of(c, t)) for t in tags}
    for tag in tags:
        r, found = recorded[tag]
        if r is None:
            lines.append(f"  {tag}: none recorded")
            continue
        to = json.loads(r["published_to"]) if r["published_to"] else {}
        where = f" to {to.get('path') or to.get('reference')}" if to else ""
        error = f": {r['error']}" if r["error"] else ""
        lines.append(f"  {tag}: {r['state']}{where}{error}")
        lines += [f"      {a.path}  {a.size} bytes  sha256:{a.sha256}" for a in found]
    lines += [f"  look: lockstep dist list -C {ws.root}",
              f"  look: lockstep dist verify {tags[-1]} -C {ws.root}"]
    return lines


def _explanation(tail: list[str]) -> list[str]:
    """The lines of a rejected run's log tail that say why: an upgrade scenario's failure
    report (check, phase, step, FAILED_ file) when there is one, else the last four lines."""
    starts = [i for i, line in enumerate(tail) if line.startswith("lockstep: upgrade scenario")]
    return tail[starts[0]:] if starts else tail[-4:]

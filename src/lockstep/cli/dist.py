"""`lockstep dist list | show | build | verify`: the distributions of integration releases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from lockstep.cli.common import JsonOpt, WorkspaceOpt, console, info, print_json, workspace

# The store and builder (SQLAlchemy) are imported inside each command, so that `lockstep --help`
# starts without loading the database engine.

app = typer.Typer(help="Distributions: the artifacts built from each integration release.",
                  no_args_is_help=True)

TagArg = Annotated[str, typer.Argument(help="An integration release tag, e.g. v2026.11.3.")]


def _open(ws_dir: Path) -> tuple[Any, Any]:
    from lockstep.distribution import journal
    from lockstep.queue import operations as ops

    ws = workspace(ws_dir)
    store = ops.open_store(ws)
    journal.ensure_tables(store)
    return ws, store


def _where(d: dict[str, Any]) -> str:
    """Where a distribution was published: its directory, or its OCI reference and digest."""
    to = d["published_to"] or {}
    if to.get("kind") == "oci":
        return f"{to['reference']}@{to['digest']}"
    return str(to.get("path", "-"))


@app.command("list")
def list_(json_out: JsonOpt = False, ws_dir: WorkspaceOpt = Path(".")) -> None:
    """Every recorded distribution, oldest release first."""
    from lockstep.distribution import journal

    _, store = _open(ws_dir)
    with store.read() as c:
        shown = [journal.decode(r, journal.artifacts_of(c, r["tag"])) for r in journal.rows(c)]
    if json_out:
        print_json(shown)
        return
    if not shown:
        console.print("no distributions recorded")
    for d in shown:
        where = _where(d)
        console.print(f"{d['tag']}  {d['state']}  {len(d['artifacts'])} artifact(s)  {where}")


@app.command("show")
def show(tag: TagArg, json_out: JsonOpt = False, ws_dir: WorkspaceOpt = Path(".")) -> None:
    """One distribution: its artifacts and digests, where it was published, its build log."""
    from lockstep.distribution import journal
    from lockstep.stages import tail

    _, store = _open(ws_dir)
    d = journal.shown(store, tag)
    if json_out:
        print_json(d)
        return
    console.print(f"{d['tag']}: {d['state']} (commit {d['commit_sha'][:12]}, manifest "
                  f"{d['manifest_digest'] or '-'}, attempt {d['attempts']})")
    if d["published_to"]:
        console.print(f"published to {_where(d)}")
    if d["error"]:
        console.print(f"error: {d['error']}")
    if d["retry_at"] is not None and d["state"] in ("pending", "built"):
        at = datetime.fromtimestamp(d["retry_at"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        console.print(f"infrastructure fault {d['infra_tries']}; `queue run` retries it from "
                      f"{at}")
    for a in d["artifacts"]:
        console.print(f"  {a['path']}  {a['size']}  sha256:{a['sha256']}")
    if d["log"]:
        console.print(f"log: {d['log']}")
        for line in tail(Path(d["log"]), 20):
            console.print(f"  | {line}")


@app.command("build")
def build(tag: TagArg, ws_dir: WorkspaceOpt = Path(".")) -> None:
    """Build and publish TAG's distribution now (a failed one is retried); exit 1 if it fails."""
    from lockstep import names
    from lockstep.distribution import build as builder
    from lockstep.distribution import journal
    from lockstep.errors import ConfigError, LockstepError, StateError

    names.ref_name(tag, "tag")
    ws, store = _open(ws_dir)
    if not builder.configured(ws):
        raise ConfigError("lockstep.toml has no [distribution] command",
                          "add [distribution] command = [...] (see docs/distribution.md)")
    state = builder.build(ws, store, tag, retry=True, log=info)
    if state is None:
        raise StateError(f"another live lockstep process is building {tag}",
                         "wait for it, then see `lockstep dist show TAG`")
    d = journal.shown(store, tag)
    if state in ("pending", "built"):
        raise LockstepError(f"distribution of {tag} met an infrastructure fault: {d['error']}",
                            "`queue run` retries it after a backoff, or run `dist build` again "
                            "once it is fixed")
    if state != "published":
        raise LockstepError(f"distribution of {tag} failed: {d['error']}",
                            f"see its log: {d['log']}")
    console.print(f"{tag}: published {len(d['artifacts'])} artifact(s) to {_where(d)}")


@app.command("verify")
def verify(tag: TagArg, ws_dir: WorkspaceOpt = Path(".")) -> None:
    """Re-read every published file of TAG and compare it with the recorded digests."""
    from lockstep.distribution import journal, publish
    from lockstep.errors import StateError

    ws, store = _open(ws_dir)
    d = journal.shown(store, tag)
    if d["state"] != "published":
        raise StateError(f"the distribution of {tag} is {d['state']}, not published",
                         "`lockstep dist build TAG` publishes it")
    found = [journal.Artifact(a["path"], a["size"], a["sha256"]) for a in d["artifacts"]]
    to = d["published_to"]
    if to.get("kind") == "oci":
        from lockstep.distribution import oci

        problems = oci.mismatches(ws, tag, to["digest"], found)
    else:
        problems = publish.mismatches(Path(to["path"]), found)
    if problems:
        raise publish.VerifyError(f"{tag}: {problems[0]}"
                                  + (f" (and {len(problems) - 1} more)" if problems[1:] else ""),
                                  "the published files differ from what was built; "
                                  "`lockstep dist build TAG` republishes them")
    console.print(f"{tag}: {len(found)} artifact(s) verified")

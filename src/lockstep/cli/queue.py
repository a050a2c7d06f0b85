"""`lockstep queue submit | run | status | show | logs | cancel | pause | resume`."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lockstep.cli.common import JsonOpt, WorkspaceOpt, console, info, print_json, workspace
from lockstep.errors import EXIT_PAUSED, UsageError
from lockstep.queue.model import parse_item_id

# The store and worker (SQLAlchemy) are imported inside each command, so that `lockstep --help`
# and the manifest commands start without loading the database engine.

app = typer.Typer(help="The gated integration queue.", no_args_is_help=True)


@app.command("submit")
def submit(
    component: Annotated[str, typer.Argument(help="Component name from lockstep.toml.")],
    version: Annotated[str, typer.Argument(help="A tag in the component's repository.")],
    config: Annotated[list[str] | None, typer.Option(
        "--config", "-c", help="Target configuration (repeatable; default: every one pinning "
        "the component).")] = None,
    priority: Annotated[int, typer.Option(help="Higher goes first; default 0.")] = 0,
    json_out: JsonOpt = False,
    ws_dir: WorkspaceOpt = Path("."),
) -> None:
    """Queue a bump; the tag is resolved to a commit SHA now, and that SHA is what is tested."""
    from lockstep.queue import operations as ops

    ws = workspace(ws_dir)
    store = ops.open_store(ws)
    item = ops.submit(ws, store, component, version, config or [], priority)
    if json_out:
        print_json(ops.show(ws, store, item.seq))
        return
    if item.state.value == "skipped":
        console.print(f"{item.id} skipped: {component} is already pinned at {version} "
                      f"({item.sha[:12]}) in {', '.join(item.configurations)}")
        return
    console.print(f"{item.id} queued: {component} {version} ({item.sha[:12]}) for "
                  f"{', '.join(item.configurations)}")


@app.command("run")
def run(
    once: Annotated[bool, typer.Option("--once", help="Handle one item, then stop.")] = False,
    until_empty: Annotated[bool, typer.Option(
        "--until-empty", help="Work until nothing is left to do (the default).")] = False,
    forever: Annotated[bool, typer.Option("--forever", help="Keep polling for work.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between polls with --forever.")] = 2.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
    json_out: JsonOpt = False,
    ws_dir: WorkspaceOpt = Path("."),
    test_crash_at: Annotated[str | None, typer.Option(
        "--test-crash-at", hidden=True,
        help="Tests only: SIGKILL this worker at a named crash point.")] = None,
) -> None:
    """Run a worker: test items through the stages and land the ones that pass."""
    from lockstep import faults
    from lockstep.queue import operations as ops
    from lockstep.queue.pipeline_worker import check_mode
    from lockstep.queue.worker import RunMode, Worker

    if test_crash_at is not None:
        faults.arm(test_crash_at)
        sys.stderr.write(faults.announcement("worker"))

    if sum([once, until_empty, forever]) > 1:
        raise UsageError("--once, --until-empty and --forever exclude each other",
                         "pass at most one")
    if poll <= 0:
        raise UsageError(f"--poll must be positive, got {poll}", "e.g. --poll 2")
    mode = RunMode.ONCE if once else RunMode.FOREVER if forever else RunMode.UNTIL_EMPTY
    ws = workspace(ws_dir)
    check_mode(once, ws.config.queue.mode)
    store = ops.open_store(ws)
    worker = Worker(ws, store, log=None if quiet or json_out else info, warn=info)
    report = worker.run(mode, poll=poll)
    if json_out:
        print_json(report.__dict__)
    else:
        console.print(report.summary())
    if report.paused is not None and mode != RunMode.FOREVER:
        raise typer.Exit(EXIT_PAUSED)


@app.command("status")
def status(
    all_finished: Annotated[bool, typer.Option(
        "--all", help="Every finished item (newest first), read --limit at a time.")] = False,
    limit: Annotated[int | None, typer.Option(
        help="How many finished items to show (default 10); with --all, how many to read "
        "at a time (default 500).", show_default=False)] = None,
    json_out: JsonOpt = False,
    ws_dir: WorkspaceOpt = Path("."),
) -> None:
    """What is queued, what runs where, why each item waits, and what finished last."""
    from lockstep.queue import operations as ops

    if limit is None:
        limit = ops.ALL_PAGE if all_finished else ops.RECENT
    ops.check_limit(limit)  # before the workspace is even opened
    ws = workspace(ws_dir)
    store = ops.open_store(ws)
    data = ops.status(ws, store, limit=limit, everything=all_finished)
    if ws.config.queue.mode != "serial":
        from lockstep.queue.pipeline_settings import pipeline_settings
        from lockstep.queue.pipeline_view import annotate

        annotate(data, store, pipeline_settings(ws.config))
    if json_out:
        print_json(data)
        return
    q = data["queue"]
    paused = f" ({q['paused_reason']})" if q["paused_reason"] else ""
    console.print(f"queue: {q['mode']}, {q['state']}{paused}")
    if q["paused_message"]:
        console.print(f"  {q['paused_message']}")
    for r in q["runners"]:
        run = r["run"]
        doing = "landing" if run["landing"] else f"{run['configuration']}/{run['stage']}"
        if r["state"] == "lost":
            console.print(f"  {r['worker']}: {run['item']} {doing}: LOST ({r['lost_reason']}); "
                          f"{r['next']}")
        else:
            console.print(f"  {r['worker']}: {run['item']} {doing}")
    pipeline = data.get("pipeline")
    if pipeline:
        console.print(f"  window {pipeline['window']}, {len(pipeline['runners'])} runner(s)")
        for r in pipeline["runners"]:
            if r["run"] is None:
                console.print(f"  {r['runner']}: free")
                continue
            assumed = [i for i in r["items"] if i not in r["own"]]
            on = f" on top of {', '.join(assumed)}" if assumed else ""
            console.print(f"  {r['runner']}: {', '.join(r['own'])}{on}: "
                          f"{r['configuration']}/{r['stage']} (try {r['attempt'] + 1})")
    _items_table("waiting", data["items"], wait=True)
    _items_table("finished" if all_finished else "recent", data["recent"], wait=False)
    if not all_finished and len(data["recent"]) == limit:
        console.print("older finished items: `lockstep queue status --all`")


def _items_table(title: str, items: list[dict[str, Any]], wait: bool) -> None:
    if not items:
        console.print(f"{title}: none")
        return
    table = Table(title=title, title_justify="left")
    for col in ("id", "state", "component", "version", "configurations",
                "wait" if wait else "outcome"):
        table.add_column(col)
    for i in items:
        table.add_row(i["id"], i["state"], i["component"], i["version"],
                      ", ".join(i["configurations"]),
                      (i["wait_reason"] or "") if wait else _outcome(i))
    console.print(table)


def _exit(run: dict[str, Any]) -> str:
    """` (exit N)` for a run that exited; nothing for one killed, timed out or never started."""
    return "" if run["exit_code"] is None else f" (exit {run['exit_code']})"


def _outcome(i: dict[str, Any]) -> str:
    if "landed" in i:
        return f"tag {i['landed']['tag']}"
    if "rejection" in i:
        return str(i["rejection"].get("message", i["rejection"].get("kind")))
    if "skipped" in i:
        by = f" by {i['skipped']['by']}" if i["skipped"].get("by") else ""
        return f"{i['skipped']['reason']}{by}"
    return str(i["state"])


@app.command("show")
def show(item: Annotated[str, typer.Argument(help="Item id, e.g. q3.")],
         json_out: JsonOpt = False, ws_dir: WorkspaceOpt = Path(".")) -> None:
    """Everything about one item: candidate, runs, outcome, notifications."""
    from lockstep.queue import operations as ops

    seq = parse_item_id(item)
    ws = workspace(ws_dir)
    data = ops.show(ws, ops.open_store(ws), seq)
    if json_out:
        print_json(data)
        return
    console.print(f"{data['id']}: {data['component']} {data['version']} ({data['sha'][:12]}) "
                  f"— {data['state']}")
    console.print(f"  configurations: {', '.join(data['configurations'])}; priority "
                  f"{data['priority']}; attempt {data['attempt']}; recoveries "
                  f"{data['recoveries']}")
    if data["wait_reason"]:
        console.print(f"  waiting: {data['wait_reason']} (position {data['position']})")
    if data["candidate"]:
        cand = data["candidate"]
        console.print(f"  candidate tree {cand['tree'][:12]} on base {cand['base'][:12]}")
    for r in data["runs"]:
        console.print(f"  run {r['configuration']}/{r['stage']} attempt {r['attempt']} try "
                      f"{r['try']}: {r['state']}{_exit(r)}"
                      + (" (flaky: passed after a failure)" if r.get("flaky") else ""))
    console.print(f"  outcome: {_outcome(data)}")
    for n in data["notifications"]:
        to = n["notifier"] if n["notifier"] is not None else "(unnamed, from schema 1)"
        error = f": {n['last_error']}" if n["last_error"] else ""
        console.print(f"  notification {n['event']} to {to}: {n['state']} after "
                      f"{n['attempts']} attempt(s){error}", markup=False)
    for e in data["history"]:
        console.print(f"  {e['at']} {e['event']}")
    rej = data.get("rejection")
    if rej and rej.get("log_tail"):
        console.print("  log tail:")
        for line in rej["log_tail"][-10:]:
            console.print(f"    {line}", markup=False)


@app.command("logs")
def logs(
    item: Annotated[str, typer.Argument(help="Item id, e.g. q3.")],
    stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
    config: Annotated[str | None, typer.Option("--config", "-c",
                                               help="Only this configuration.")] = None,
    ws_dir: WorkspaceOpt = Path("."),
) -> None:
    """Print the logs of an item's runs (every try of every stage, oldest first)."""
    from lockstep.queue import operations as ops

    seq = parse_item_id(item)
    ws = workspace(ws_dir)
    files = ops.log_files(ws, ops.open_store(ws), seq, stage, config)
    if not files:
        console.print(f"no runs of q{seq} match")
        return
    for run, path in files:
        sys.stdout.write(f"==> {run['configuration']}/{run['stage']} attempt {run['attempt']} "
                         f"try {run['try_no']}: {run['state']} ({path}) <==\n")
        try:
            sys.stdout.write(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            sys.stdout.write("(log file missing)\n")
    sys.stdout.flush()


@app.command("cancel")
def cancel(item: Annotated[str, typer.Argument(help="Item id, e.g. q3.")],
           ws_dir: WorkspaceOpt = Path(".")) -> None:
    """Cancel an item; a running test is stopped. A landing item cannot be cancelled (exit 1)."""
    from lockstep.queue import operations as ops

    seq = parse_item_id(item)
    ws = workspace(ws_dir)
    result = ops.cancel(ops.open_store(ws), seq, getpass.getuser())
    console.print(f"{result.id} cancelled")


@app.command("pause")
def pause(
    abort_running: Annotated[bool, typer.Option(
        "--abort-running", help="Also stop running tests; their items are requeued.")] = False,
    ws_dir: WorkspaceOpt = Path("."),
) -> None:
    """Stop starting work (submissions are still accepted; a landing under way completes)."""
    from lockstep.queue import operations as ops

    ws = workspace(ws_dir)
    aborted = ops.pause(ops.open_store(ws), abort_running=abort_running)
    suffix = f"; aborted {', '.join(aborted)} (requeued)" if aborted else ""
    console.print(f"queue paused{suffix}")


@app.command("drain")
def drain(ws_dir: WorkspaceOpt = Path(".")) -> None:
    """Start nothing new, let what started finish and land, then pause (reason: drained)."""
    from lockstep.queue import operations as ops

    ws = workspace(ws_dir)
    paused = ops.drain(ops.open_store(ws))
    if paused is not None:
        console.print(f"queue already paused ({paused}): nothing to drain")
        return
    console.print("queue draining: it pauses once the work in flight has landed")


@app.command("resume")
def resume(
    accept_history: Annotated[bool, typer.Option(
        "--accept-history", help="After a history-rewritten pause: accept the remote branch "
        "as it is now, losing the landing it no longer contains.")] = False,
    ws_dir: WorkspaceOpt = Path("."),
) -> None:
    """Resume a paused queue."""
    from lockstep.queue import operations as ops

    ws = workspace(ws_dir)
    lost = ops.resume(ops.open_store(ws), accept_history, getpass.getuser())
    if lost is not None:
        console.print(f"accepted the rewritten history of {ws.branch} on {ws.remote} "
                      f"(without {lost[:12]}); queue resumed")
        return
    console.print("queue resumed")

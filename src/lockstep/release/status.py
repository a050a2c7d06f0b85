"""`release status`: each component's step and state, read from the journal alone."""

from __future__ import annotations

from typing import Any

from lockstep.release.journal import Entry, Journal


def component_status(name: str, node: dict[str, Any], entries: list[Entry],
                     outcome: dict[str, Any] | None) -> dict[str, Any]:
    """One component's line: level, step, state, tag, commits, transport, images, digests,
    time waited, a skipped advance's warning and the last error."""
    info: dict[str, Any] = {
        "component": name, "level": node["level"], "step": None, "state": "pending",
        "tag": node["tag"], "source": node["source"], "pin_commit": None, "transport": None,
        "images": [f"{a['image']}:{a['image_tag']}" for a in node["artifacts"]],
        "digests": {}, "waited_seconds": 0.0, "advance_warning": None, "error": None,
        "notes": []}
    wait_started: float | None = None
    for e in entries:
        info["step"] = e.step
        if e.state == "failed":
            info["state"], info["error"] = "failed", e.observed.get("error")
            continue
        info["state"] = {"started": "running", "done": "running", "skipped": "running"}[e.state]
        info["error"] = None
        if e.observed.get("transport"):
            info["transport"] = e.observed["transport"]
        info["notes"] += [f"{f['action']}: {f['url']} failed in {f['seconds']:.1f}s "
                          f"({f['cause']}); tried the next URL"
                          for f in e.observed.get("fallbacks", [])]
        if e.step == "commit" and e.state == "done":
            info["pin_commit"] = e.observed.get("pin_commit")
        if e.step == "advance" and e.state == "skipped":
            info["advance_warning"] = e.observed.get("warning")
        if e.step == "wait" and e.state == "started":
            wait_started = e.at
            info["state"] = "waiting"
        if e.step == "wait" and e.state == "done":
            info["state"] = "done"
            info["digests"] = e.observed.get("digests", {})
            if wait_started is not None:
                info["waited_seconds"] += round(e.at - wait_started, 3)
                wait_started = None
    if outcome:
        if name in outcome.get("blocked", {}):
            info["state"], info["error"] = "blocked", outcome["blocked"][name]
        elif info["state"] in ("running", "waiting") and outcome.get("interrupted") is not None:
            info["state"] = "pending" if info["state"] == "running" else "waiting"
    return info


def release_status(journal: Journal, configuration: str,
                   version: str | None) -> dict[str, Any] | None:
    """The status object `release status --json` and `release cut --json` print."""
    found = journal.release(version, configuration)
    if found is None:
        return None
    version, plan, outcome = found
    entries = journal.entries(version, configuration)
    components = []
    for level in plan["levels"]:
        for name in level:
            mine = [e for e in entries if e.component == name]
            components.append(component_status(name, plan["nodes"][name], mine, outcome))
    states = {c["state"] for c in components}
    overall = ("done" if states == {"done"} else "failed" if "failed" in states
               else "interrupted" if outcome and outcome.get("interrupted") else "in progress")
    return {"release": version, "configuration": configuration,
            "integration_tag": plan.get("integration_tag"),
            "integration_commit": plan["integration_commit"], "state": overall,
            "warnings": (outcome or {}).get("warnings", []), "components": components}


def render(status: dict[str, Any]) -> list[str]:
    """Human lines for a status object."""
    lines = [f"release {status['release']}  config {status['configuration']}  integration "
             f"{(status['integration_tag'] or '')} {status['integration_commit'][:12]}  "
             f"{status['state']}"]
    for c in status["components"]:
        pin = f" pin {c['pin_commit'][:12]}" if c["pin_commit"] else ""
        via = f" via {c['transport']}" if c["transport"] else ""
        digests = "".join(f"\n    {img} {d}" for img, d in c["digests"].items() if d)
        lines.append(f"level {c['level']}  {c['component']:<14} {c['state']:<8} "
                     f"step {c['step'] or '-':<8} tag {c['tag']} src {c['source'][:12]}"
                     f"{pin}{via}{digests}")
        lines += [f"    note: {n}" for n in c.get("notes", [])]
        if c["advance_warning"]:
            lines.append(f"    warning: {c['advance_warning']}")
        if c["error"]:
            lines.append(f"    error: {c['error']}")
    return lines

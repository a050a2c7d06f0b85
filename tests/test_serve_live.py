"""Live updates and the pipeline on `lockstep serve`, over real HTTP with reads behind the token:
`/api/events` announces a submission within a bounded wait, the token in its query string is
masked in the access log, `/api/queue` shows pipeline runners and the scheduler's wait reasons,
and the page (headless Chromium) shows them, a release cut's steps, and updates without a
reload."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockstep.queue import pipeline_store as ps
from lockstep.queue.pipeline import decide
from lockstep.queue.pipeline_settings import pipeline_settings
from lockstep.release.journal import Journal
from lockstep.server.live import ChangeFeed
from tests.infra.browser import browser_page
from tests.infra.serve import TOKEN, Served, running_server
from tests.system import System, isolated_git

EVENT_WAIT = 15.0  # seconds: a safety net only, each wait ends on the event itself
WAIT_MS = 20_000


@dataclass
class World:
    """A system whose reads need the token, served by a real `lockstep serve` process."""

    system: System
    server: Served
    api: httpx.Client


def seed_cut(system: System) -> None:
    """A release cut half done, as `release cut` journals it: alpha tagged and pushing."""
    journal = Journal(system.ws_dir / ".lockstep" / "release.db")
    plan = {"version": "v1.0.0", "configuration": "default", "integration_tag": "v2026.11.1",
            "integration_commit": "c" * 40, "levels": [["alpha"]],
            "nodes": {"alpha": {"level": 0, "tag": "alpha-v1.0.0", "source": "d" * 40,
                                "artifacts": []}}}
    journal.begin("v1.0.0", "default", plan)
    for step, state in (("resolve", "done"), ("tag", "done"), ("push", "started")):
        journal.record("v1.0.0", "default", "alpha", step, state, "run-1", {}, {})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with isolated_git(tmp_path_factory):
        tmp = tmp_path_factory.mktemp("serve-live")
        system = System.create(tmp / "sys", configurations=("default",))
        seed_cut(system)
        with running_server(system.ws_dir, tmp / "logs", "--reads", "token") as server, \
                server.client() as api:
            yield World(system, server, api)


class EventReader:
    """The `changed` events of one open `/api/events` stream, read as they arrive."""

    def __init__(self, resp: httpx.Response) -> None:
        self.lines = resp.iter_lines()

    def next_version(self) -> int:
        """The version of the next `changed` event (keep-alive comments are skipped)."""
        event: dict[str, str] = {}
        for line in self.lines:
            if line == "":
                if event.get("event") == "changed":
                    return int(json.loads(event["data"])["version"])
                event = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                event[key] = value.strip()
        raise AssertionError("the event stream ended")

    def version_above(self, seen: int) -> int:
        """Read events until one is newer than `seen`."""
        while (version := self.next_version()) <= seen:
            pass
        return version


def test_a_submission_is_announced_on_the_event_stream(world: World) -> None:
    url = world.server.url + "/api/events"
    assert httpx.get(url, timeout=5).status_code == 401
    assert httpx.get(url, params={"token": "not-the-token-at-all"}, timeout=5).status_code == 403
    timeout = httpx.Timeout(5, read=EVENT_WAIT)
    with httpx.stream("GET", url, params={"token": TOKEN}, timeout=timeout) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = EventReader(resp)
        first = events.next_version()
        settled = first if first > 0 else events.next_version()  # the watcher's first probe
        made = world.api.post("/api/queue/items", json={"component": "alpha",
                                                        "version": "v1.1.0"})
        assert made.status_code == 201, made.text
        started = time.monotonic()
        assert events.version_above(settled) > settled
        assert time.monotonic() - started < EVENT_WAIT
    shown = world.api.get("/api/overview").json()
    assert made.json()["id"] in [i["id"] for i in shown["queue"]["items"]]
    log = world.server.log_text()
    assert "GET /api/events?token=*** HTTP/1.1" in log, log[-2000:]
    assert TOKEN not in log


def test_one_watcher_serves_every_stream() -> None:
    """Two open streams wake on one change with the same version, and the store is probed
    once per interval, not once per stream."""
    value = {"v": 0}
    calls = []

    def probe() -> Any:
        calls.append(time.monotonic())
        return value["v"]

    async def scenario() -> tuple[list[int], float]:
        feed = ChangeFeed(probe, 0.05)
        async with feed.subscription(), feed.subscription():
            first = await feed.wait(0, EVENT_WAIT)
            value["v"] = 1
            woke = await asyncio.gather(feed.wait(first, EVENT_WAIT),
                                        feed.wait(first, EVENT_WAIT))
            began = time.monotonic()
            await asyncio.sleep(0.5)
            spent = time.monotonic() - began
        return [first, *woke], spent

    (first, a, b), spent = asyncio.run(scenario())
    assert first == 1 and a == b == 2
    window = [t for t in calls if t >= calls[-1] - spent]
    assert len(window) <= spent / 0.05 + 2, f"{len(window)} probes in {spent:.2f}s"


@pytest.fixture(scope="module")
def with_runners(world: World) -> None:
    """Two more items, two pipeline runners and one scheduling round applied, as a pipeline
    worker would."""
    system = world.system
    assert "pipeline" not in world.api.get("/api/queue").json()  # serial: the CLI's document
    system.submit("beta", "v1.1.0")
    system.submit("gamma", "v1.1.0")
    settings = pipeline_settings(system.workspace().config)
    store = system.store()
    with store.tx() as c:
        ps.add_runner(c, "r1", worker="w1")
        ps.add_runner(c, "r2", worker="w1")
        snap = ps.read_snapshot(store, c, settings)
        ps.apply_decisions(store, c, snap, decide(snap, (), time.time()), time.time())


@pytest.mark.usefixtures("with_runners")
def test_queue_shows_pipeline_runners_and_wait_reasons(world: World) -> None:
    doc = _eventually(world.api, lambda d: "pipeline" in d)
    items = doc["items"]
    ids = [i["id"] for i in items]
    runners = doc["pipeline"]["runners"]
    assert [(r["runner"], r["worker"]) for r in runners] == [("r1", "w1"), ("r2", "w1")]
    assert (runners[0]["items"], runners[0]["own"], runners[0]["configuration"],
            runners[0]["stage"]) == ([ids[0]], [ids[0]], "default", "build")
    assert runners[1]["run"] is None  # serial: a window of one
    assert len(items) >= 2
    assert [i["wait_reason"] for i in items] == [None] + ["outside-window"] * (len(items) - 1)
    assert doc["pipeline"]["window"] == 1 and doc["queue"]["state"] == "running"


def _eventually(api: httpx.Client, ok: Any) -> dict[str, Any]:
    """/api/queue once it satisfies `ok` (the server's document may be cache_seconds old)."""
    deadline = time.monotonic() + EVENT_WAIT
    while True:
        doc: dict[str, Any] = api.get("/api/queue").json()
        if ok(doc) or time.monotonic() > deadline:
            return doc
        time.sleep(0.1)


@pytest.mark.usefixtures("with_runners")
def test_the_page_shows_runners_cuts_and_updates_live(world: World, tmp_path: Path) -> None:
    """The reader types the token in, as the page asks; the event stream then gets it too."""
    doc = _eventually(world.api, lambda d: "pipeline" in d)
    first = doc["items"][0]["id"]
    with browser_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(world.server.url + "/")
        page.wait_for_selector("#token-form:not([hidden])", timeout=WAIT_MS)
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        page.wait_for_selector("#mode[data-mode=live]", timeout=WAIT_MS)
        page.evaluate("window.__sameDocument = true")
        row = "#pipeline-runners tr[data-runner=r1]"
        page.wait_for_selector(row, timeout=WAIT_MS)
        assert page.text_content(f"{row} .doing") == "default/build"
        assert page.text_content(f"{row} .own").startswith(f"{first} ")
        assert "free" in page.text_content("#pipeline-runners tr[data-runner=r2]")
        assert "window 1" in page.text_content("#window")
        cut = "#cut-list [data-cut='default/v1.0.0']"
        assert page.get_attribute(cut, "data-state") == "in progress"
        steps = [(s.get_attribute("data-step"), s.get_attribute("data-state"))
                 for s in page.query_selector_all(f"{cut} [data-component=alpha] .step")]
        assert steps == [("resolve", "done"), ("tag", "done"), ("push", "started")]
        made = world.api.post("/api/queue/items", json={"component": "alpha",
                                                        "version": "v1.2.0"}).json()["id"]
        waiting = f"#waiting [data-item={made}]"
        page.wait_for_selector(waiting, timeout=WAIT_MS)
        assert "waits: outside-window" in page.text_content(f"{waiting} .why")
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
        assert page.get_attribute("#mode", "data-mode") == "live"
        shot = tmp_path / "status-page-pipeline.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"status page screenshot: {shot}")
        assert errors == [], errors


@pytest.mark.usefixtures("with_runners")
def test_the_page_polls_when_the_event_stream_fails(world: World) -> None:
    with browser_page() as page:
        page.route("**/api/events*", lambda route: route.abort())
        page.goto(world.server.url + "/")
        page.wait_for_selector("#token-form:not([hidden])", timeout=WAIT_MS)
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        page.wait_for_selector("#mode[data-mode=polling]", timeout=WAIT_MS)
        page.wait_for_selector("#pipeline-runners tr[data-runner=r1]", timeout=WAIT_MS)
        made = world.api.post("/api/queue/items", json={"component": "gamma",
                                                        "version": "v1.2.0"}).json()["id"]
        page.wait_for_selector(f"#waiting [data-item={made}]", timeout=WAIT_MS)
        assert "polling every" in page.text_content("#mode")

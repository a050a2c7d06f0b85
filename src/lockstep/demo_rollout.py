"""The demo's last act: roll the landed integration releases out to a local environment while a
client keeps reading and writing the inventory service (docs/rollouts-controller.md).

The inventory component's own `service.py` (from its repository at the pinned commit) runs as
the stateful component of Environment `shop`; the first landed release becomes generation 1,
then the newest one rolls out beside it (WaitUntilReady) while the client writes items and reads
them back through the stable endpoint. Every process started here is stopped before returning.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lockstep.errors import LockstepError
from lockstep.rollout.controller import Controller, store_path
from lockstep.rollout.driver import LocalDriver
from lockstep.rollout.plan import ApplyStateless
from lockstep.rollout.resource import validate
from lockstep.rollout.store import EnvironmentStore
from lockstep.workspace import Workspace

ENV = "shop"
COMPONENT = "inventory"
ROLLOUT_TIMEOUT = 120.0  # seconds one release may take to become UpToDate
CLIENT_PAUSE = 0.01  # seconds between the client's write-and-read rounds
REQUEST_TIMEOUT = 5.0


@dataclass
class Tally:
    """What the client did and what failed; `written` holds each acknowledged write."""

    reads: int = 0
    failed_reads: int = 0
    writes: int = 0
    failed_writes: int = 0
    written: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # the first few reasons

    def failed(self, what: str) -> None:
        """Remember why a request failed (a handful is enough to explain a count)."""
        if len(self.failures) < 3:
            self.failures.append(what)


class Client(threading.Thread):
    """Writes `item-<n>` = n, then reads back the last acknowledged item, until stopped; each
    request on a new connection to wherever `address()` points now."""

    def __init__(self, address: Callable[[], str | None]) -> None:
        super().__init__(name="demo-client", daemon=True)
        self.address = address
        self.tally = Tally()
        self.stopping = threading.Event()
        self.marks: dict[str, int] = {}  # label → number of acknowledged writes at that moment

    def mark(self, label: str) -> None:
        """Remember how many writes were acknowledged so far (e.g. before the rollout)."""
        self.marks[label] = len(self.tally.written)

    def run(self) -> None:
        """The read-write loop."""
        t = self.tally
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=REQUEST_TIMEOUT, trust_env=False, limits=limits) as http:
            n, last = 0, None
            while not self.stopping.is_set():
                n += 1
                item = f"item-{n}"
                t.writes += 1
                ok = self._request(http, "PUT", item, str(n)) is not None
                if ok:
                    t.written[item], last = n, item
                else:
                    t.failed_writes += 1
                if last is not None:
                    t.reads += 1
                    body = self._request(http, "GET", last)
                    if body is None or body.get("count") != t.written[last]:
                        t.failed_reads += 1
                        if body is not None:
                            t.failed(f"GET {last}: {body}")
                self.stopping.wait(CLIENT_PAUSE)

    def _request(self, http: httpx.Client, method: str, item: str,
                 content: str | None = None) -> dict[str, Any] | None:
        """One request; its JSON body on 200, else None (the reason remembered)."""
        address = self.address()
        if address is None:
            self.tally.failed(f"{method} {item}: no endpoint")
            return None
        try:
            resp = http.request(method, f"http://{address}/stock/{item}", content=content)
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            self.tally.failed(f"{method} {item}: {type(exc).__name__}: {exc}")
            return None
        if resp.status_code != 200 or not isinstance(body, dict):
            self.tally.failed(f"{method} {item}: HTTP {resp.status_code} {body}")
            return None
        return body


def endpoint_of(driver: LocalDriver, env: str, component: str) -> Callable[[], str | None]:
    """Where a client reaches `component`: its stable endpoint when the driver serves one,
    else the active generation's public address from routes.json."""
    stable = getattr(driver, "endpoint", None)

    def address() -> str | None:
        if stable is not None:
            found = stable(env, component)
            if isinstance(found, str):
                return found
        route = driver.routes(env).get(component)
        public = route.get("public") if isinstance(route, dict) else None
        return public if isinstance(public, str) else None

    return address


def run_rollout(ws: Workspace, tags: list[str], log: Callable[[str], None]) -> str:
    """Roll the first then the newest of `tags` out to environment `shop` with a client
    running across the second rollout; the summary's lines."""
    if len(tags) < 2:
        return "rollout: skipped (it needs two landed integration releases)"
    first, newest = tags[0], tags[-1]
    _reset(ws.root)
    store = EnvironmentStore(store_path(ws.root))
    driver = LocalDriver(ws.root)
    reader = LocalDriver(ws.root)
    controller = Controller(store, driver)
    stop = threading.Event()
    thread = threading.Thread(target=controller.run, kwargs={"stop": stop},
                              name="demo-controller", daemon=True)
    client = Client(endpoint_of(reader, ENV, COMPONENT))
    lines = ["", f"rollout to local environment {ENV} (controller and inventory service as "
                 "local processes, WaitUntilReady):"]
    try:
        versions = {t: _version(driver, t) for t in (first, newest)}
        thread.start()
        log(f"rolling out {first} (inventory {versions[first]}) to environment {ENV}:")
        took = _roll(store, first, 1)
        lines.append(f"  {first}: generation 1 runs inventory {versions[first]}'s service.py, "
                     f"up to date in {took:.1f} s")
        client.start()
        _wait_for(lambda: len(client.tally.written) >= 20, "the client's first writes")
        client.mark("before")
        log(f"rolling out {newest} (inventory {versions[newest]}) while a client reads and "
            "writes:")
        took = _roll(store, newest, 2)
        client.mark("after")
        _wait_for(lambda: len(client.tally.written) >= client.marks["after"] + 20,
                  "the client's writes after the rollout")
        client.stopping.set()
        client.join()
        lines.append(f"  {newest}: generation 2 runs inventory {versions[newest]}'s service.py, "
                     f"promoted and generation 1 fenced in {took:.1f} s")
        lines += _client_lines(client, reader)
    except LockstepError as exc:
        lines.append(f"  not rolled out: {exc.one_line()}")
    finally:
        client.stopping.set()
        stop.set()
        thread.join()
        _stop_all(driver)
        reader.close()
    cd = f"-C {ws.root}"
    lines += [f"  look: lockstep rollout history {ENV} {cd}",
              f"  look: ls {ws.root / '.lockstep' / 'rollouts' / ENV / 'logs'}"]
    return "\n".join(lines)


def _client_lines(client: Client, reader: LocalDriver) -> list[str]:
    """The client's counts, and every write acknowledged before the rollout read back now."""
    t = client.tally
    lines = [f"  client across the rollout: {t.reads} reads ({t.failed_reads} failed), "
             f"{t.writes} writes ({t.failed_writes} failed)"]
    lines += [f"    e.g. {why}" for why in t.failures]
    before = list(t.written.items())[: client.marks["before"]]
    address = endpoint_of(reader, ENV, COMPONENT)()
    intact, migrated = 0, 0
    with httpx.Client(timeout=REQUEST_TIMEOUT, trust_env=False) as http:
        for item, count in before:
            try:
                body = http.get(f"http://{address}/stock/{item}").json()
            except (httpx.HTTPError, ValueError):
                continue
            if isinstance(body, dict) and body.get("count") == count:
                intact += 1
                migrated += "reserved" in body
    lines.append(f"  data: {intact} of {len(before)} items written before the rollout read back "
                 f"after it ({migrated} with the `reserved` column the new release's migration "
                 "added)")
    return lines


def _roll(store: EnvironmentStore, release: str, generation: int) -> float:
    """Apply `release` and wait until the environment is UpToDate on `generation`; seconds."""
    obj = {"apiVersion": "lockstep.dev/v1alpha2", "kind": "Environment",
           "metadata": {"name": ENV}, "spec": {"release": release}}
    validate(obj)
    started = time.monotonic()
    store.put(obj)
    deadline = started + ROLLOUT_TIMEOUT
    while time.monotonic() < deadline:
        status = store.get(ENV).full().get("status") or {}
        cond: dict[str, Any] = next(iter(status.get("conditions") or []), {})
        if cond.get("reason") == "Applied" and status.get("activeGeneration") == generation \
                and status.get("lastCompletedRelease") == release:
            return time.monotonic() - started
        if cond.get("reason") == "FailedDeploy":
            raise LockstepError(f"{release}: {cond.get('message')}",
                                f"see the logs in .lockstep/rollouts/{ENV}/logs")
        time.sleep(0.05)
    raise LockstepError(f"{release} was not up to date within {ROLLOUT_TIMEOUT:.0f} s",
                        f"lockstep rollout status {ENV}")


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise LockstepError(f"timed out waiting for {what}", "see the service's log")
        time.sleep(0.02)


def _version(driver: LocalDriver, tag: str) -> str:
    """The inventory version a release pins."""
    return driver.releases.resolve(tag).components[COMPONENT].pin.version


def _reset(root: Path) -> None:
    """Start from an empty environment: stop what an earlier run left, forget its state."""
    leftover = LocalDriver(root)
    _stop_all(leftover)
    shutil.rmtree(leftover.root, ignore_errors=True)
    store_path(root).unlink(missing_ok=True)


def _stop_all(driver: LocalDriver) -> None:
    """Stop every workload and endpoint of the demo's environment."""
    driver.apply_stateless(ENV, ApplyStateless(components={}))
    for generation in sorted({r["generation"] for r in driver.records(ENV)
                              if isinstance(r.get("generation"), int)}):
        driver.teardown(ENV, generation)
    endpoints = getattr(driver, "endpoints", None)
    if endpoints is not None:
        endpoints.stop_all(ENV)
    driver.close()

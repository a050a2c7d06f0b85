"""The demo system's upgrade checks: the `[scenarios] plugin` of its integration repo.

`lockstep demo` commits this file's text as `checks/demo_checks.py` in the integration repo
(`plugin = "checks.demo_checks"`), so it is the system's own code, importable with the repo root
on the path. The checks speak to the inventory service (`GET`/`PUT /stock/<item>`, `GET /info`)
that the demo deploys; every validate only reads, so it passes any number of times in a row.
"""

from __future__ import annotations

import random
from typing import Any

import httpx

from lockstep.scenarios import Check, Step, StepContext

COMPONENT = "inventory"
# The inventory service reads and writes one shared SQLite file, so a leader serves what the
# previous one wrote at once; a short retry covers a connection made while it starts listening.
SETTLE = 3.0


def _url(ctx: StepContext, path: str) -> str:
    """The URL of `path` on the inventory service of the step's instance."""
    address = ctx.endpoints[COMPONENT]["public"]
    base = address if "://" in address else f"http://{address}"
    return f"{base.rstrip('/')}{path}"


_http: httpx.Client | None = None


def _client() -> httpx.Client:
    """One client for every step (creating one costs more than a request); a new connection
    per request, as the process behind an address changes from action to action."""
    global _http
    if _http is None:
        _http = httpx.Client(timeout=5.0, trust_env=False,
                             limits=httpx.Limits(max_keepalive_connections=0))
    return _http


def _get(ctx: StepContext, path: str) -> tuple[int, Any]:
    """Status and JSON body of a GET."""
    resp = _client().get(_url(ctx, path))
    return resp.status_code, resp.json()


def put(ctx: StepContext, item: str, count: int) -> None:
    """Set an item's count on the leader, retrying while it is not ready."""
    def attempt() -> None:
        resp = _client().put(_url(ctx, f"/stock/{item}"), content=str(count))
        if resp.status_code != 200:
            raise AssertionError(f"PUT /stock/{item} = {count}: HTTP {resp.status_code} "
                                 f"{resp.text.strip()}")
    ctx.eventually(attempt, timeout=SETTLE)


def read(ctx: StepContext, item: str) -> dict[str, Any]:
    """An item's row as the service returns it; an AssertionError naming what came back if it
    cannot be read (after retrying for SETTLE seconds)."""
    def attempt() -> dict[str, Any]:
        status, body = _get(ctx, f"/stock/{item}")
        if status != 200 or not isinstance(body, dict):
            raise AssertionError(f"{item} written before is not readable any more at "
                                 f"{ctx.current_version or 'the target'}: GET /stock/{item} "
                                 f"answers HTTP {status} {body}")
        return body
    return ctx.eventually(attempt, timeout=SETTLE)


def expect(ctx: StepContext, item: str, count: int) -> dict[str, Any]:
    """An item's row, asserting its count."""
    row = read(ctx, item)
    if row.get("count") != count:
        raise AssertionError(f"{item}: expected count {count}, read {row.get('count')} "
                             f"({row}) at {ctx.current_version or 'the target'}")
    return row


class StockSurvivesUpgrade(Check):
    """Data written before an upgrade (and in each phase) is readable after it, unchanged."""

    def __init__(self, base_version: str | None, rng: random.Random) -> None:
        super().__init__(base_version, rng)
        self.prefix = f"data-{rng.getrandbits(32):08x}"
        self.rows: dict[str, int] = {}  # what was acknowledged so far

    def initialize(self) -> Step:
        """Two items written on the base release."""
        return self._writer("init", 2)

    def manipulate(self) -> list[Step]:
        """One more item in each phase."""
        return [self._writer("p1", 1), self._writer("p2", 1)]

    def _writer(self, label: str, n: int) -> Step:
        """A step writing n items with counts drawn now (from the check's rng)."""
        wanted = {f"{self.prefix}-{label}-{i}": self.rng.randint(1, 999) for i in range(n)}

        def write(ctx: StepContext) -> None:
            for item, count in wanted.items():
                put(ctx, item, count)
                self.rows[item] = count
        return write

    def validate(self) -> Step:
        """Every acknowledged item reads back with its count (reads only)."""
        def check(ctx: StepContext) -> None:
            for item, count in self.rows.items():
                expect(ctx, item, count)
        return check


class CounterAcrossPhases(Check):
    """A counter read and advanced in both phases holds the sum of every step."""

    def __init__(self, base_version: str | None, rng: random.Random) -> None:
        super().__init__(base_version, rng)
        self.item = f"counter-{rng.getrandbits(32):08x}"
        self.value = rng.randint(10, 99)  # the count the service must hold now

    def initialize(self) -> Step:
        """The counter's starting value, written on the base release."""
        start = self.value
        return lambda ctx: put(ctx, self.item, start)

    def manipulate(self) -> list[Step]:
        """Advance the counter by a drawn amount in each phase."""
        return [self._advance(self.rng.randint(1, 9)), self._advance(self.rng.randint(1, 9))]

    def _advance(self, delta: int) -> Step:
        """A step reading the counter (it must hold what the last step left) and adding delta."""
        def step(ctx: StepContext) -> None:
            before, after = self.value, self.value + delta
            got = read(ctx, self.item).get("count")
            if got not in (before, after):  # `after`: this step's own write, retried
                raise AssertionError(f"{self.item}: expected {before} before adding {delta}, "
                                     f"read {got} at {ctx.current_version or 'the target'}")
            put(ctx, self.item, after)
            self.value = after
        return step

    def validate(self) -> Step:
        """The counter holds the start plus both phases' amounts (reads only)."""
        return lambda ctx: expect(ctx, self.item, self.value)


class ReservedColumnMigration(Check):
    """The schema migration of inventory v1.2.0: once a release with schema 2 or later leads,
    the `reserved` column exists and rows written before it read as 0 reserved."""

    def __init__(self, base_version: str | None, rng: random.Random) -> None:
        super().__init__(base_version, rng)
        self.prefix = f"schema-{rng.getrandbits(32):08x}"
        self.rows: dict[str, int] = {}

    def initialize(self) -> Step:
        """A row written on the base release, before any migration."""
        return self._writer("old")

    def manipulate(self) -> list[Step]:
        """One more row in each phase."""
        return [self._writer("p1"), self._writer("p2")]

    def _writer(self, label: str) -> Step:
        """A step writing one row with a drawn count."""
        item, count = f"{self.prefix}-{label}", self.rng.randint(1, 99)

        def write(ctx: StepContext) -> None:
            put(ctx, item, count)
            self.rows[item] = count
        return write

    def validate(self) -> Step:
        """The leader's schema has the column it promises, and the rows its default (reads
        only; /info says which schema leads)."""
        def check(ctx: StepContext) -> None:
            status, info = _get(ctx, "/info")
            schema = info.get("schema", 1) if status == 200 and isinstance(info, dict) else 1
            if schema >= 2 and "reserved" not in info.get("columns", []):
                raise AssertionError(f"schema {schema} leads, but table stock has no `reserved` "
                                     f"column: {info.get('columns')}")
            for item, count in self.rows.items():
                row = expect(ctx, item, count)
                if schema >= 2 and row.get("reserved") != 0:
                    raise AssertionError(f"{item}: the migration should give old rows "
                                         f"reserved = 0, read {row}")
        return check

"""`decide`: one pass over the front of the queue, in order, producing the next actions.

Each unit (an item, or a batch in batch mode) is looked at once, front to back. A prefix of the
non-failing items ahead is kept as it goes: a candidate is valid while its assumed items, less
those landed since it was built, are exactly that prefix (§4). Runners are handed out at the end,
front-most candidate first, after every kill of this pass has freed its runner.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from lockstep.queue.model import State
from lockstep.queue.pipeline.batching import parts
from lockstep.queue.pipeline.decisions import (
    Action,
    Decisions,
    Discard,
    DrainQueue,
    Enter,
    FailCandidate,
    Land,
    PassCandidate,
    PauseQueue,
    Reject,
    ResumeQueue,
    SetWindow,
    Split,
    StartCandidate,
    StartRun,
    WithdrawItem,
)
from lockstep.queue.pipeline.events import (
    CancelRequest,
    DrainRequest,
    Event,
    PauseRequest,
    ResumeRequest,
)
from lockstep.queue.pipeline.runs import Need, Outcome, evaluate
from lockstep.queue.pipeline.settings import Mode, WindowKind
from lockstep.queue.pipeline.snapshot import (
    CandidateSnap,
    Failure,
    ItemSnap,
    QueueSnap,
    RunState,
)

LANDED_LIKE = frozenset({State.LANDED, State.LANDING})
GONE = frozenset({State.REJECTED, State.CANCELLED, State.SKIPPED})
CANCELLABLE = frozenset({State.QUEUED, State.TESTING, State.FAILING, State.PASSED})
SHRINKS_WINDOW = frozenset({"stage-failed", "stage-timeout", "item-timeout"})


def decide(state: QueueSnap, events: Sequence[Event], now: float) -> Decisions:
    """The scheduler (spec/queue.md §3–§5): what to start, cancel, land, reject or split now."""
    return _Pass(state, now).run(events)


class _Pass:
    """The working memory of one `decide` call; discarded when it returns."""

    def __init__(self, state: QueueSnap, now: float) -> None:
        """Start a pass over `state` at `now`."""
        self.s = state
        self.cfg = state.settings
        self.now = now
        self.actions: list[Action] = []
        self.over: dict[str, State] = {}  # item states changed by this pass
        self.discarded: set[str] = set()
        self.killed: set[str] = set()  # runs killed by this pass
        self.landed_total = state.landed_count
        self.prefix: list[str] = []  # non-failing non-terminal items ahead, in order
        self.units = 0  # non-terminal units ahead (what the window counts)
        self.settled = True  # every unit ahead passed (a failed batch may split)
        self.window = self._window()
        self.paused = state.paused
        self.draining = state.draining
        self.abort = False
        self.needs: list[tuple[Need, tuple[str, ...]]] = []
        self.waiting: list[tuple[str, str]] = []
        self.wake: float | None = None
        self.next_candidate = state.next_candidate
        self.next_group = state.next_group
        self.next_position = state.next_position
        self.infra_streak = state.infra_streak
        self.split_ahead = False  # a batch ahead was split in this pass

    # --- the pass ------------------------------------------------------------------------------

    def run(self, events: Sequence[Event]) -> Decisions:
        """Apply the requests, walk the started units, admit new ones, hand out runners."""
        for event in events:
            self._request(event)
        items = self.s.items
        n = len(items)
        i = 0
        while i < n:
            first = items[i]
            if first.position is None:
                break
            j = i + 1
            if first.group is not None:
                while j < n and items[j].group == first.group:
                    j += 1
            unit = [items[k] for k in range(i, j) if items[k].id not in self.over]
            i = j
            if unit:
                self._started(unit)
        rest = self._admit_batches(i) if self.cfg.mode == Mode.BATCH else self._admit_items(i)
        runners = self._assign()
        self._finish_drain()
        if self.window != self.s.window:
            self.actions.append(SetWindow(self.window))
        return Decisions(tuple(self.actions), self.wake, self.window, tuple(self.waiting), rest,
                         runners)

    def _request(self, event: Event) -> None:
        """A user request, applied before the walk."""
        if isinstance(event, CancelRequest):
            if self._state(event.item) not in CANCELLABLE:
                return  # landing or terminal: the command reports it, nothing to schedule
            self.actions.append(WithdrawItem(event.item))
            self.over[event.item] = State.CANCELLED
            for c in self.s.candidates.values():
                if event.item in c.own and c.id not in self.discarded:
                    self._discard(c, "cancelled")
        elif isinstance(event, PauseRequest):
            self.paused = True
            self.abort = self.abort or event.abort_running
            self.actions.append(PauseQueue(event.reason))
        elif isinstance(event, ResumeRequest):
            self.paused = self.draining = False
            self.actions.append(ResumeQueue())
        elif isinstance(event, DrainRequest):
            self.draining = True
            self.actions.append(DrainQueue())

    def _started(self, unit: list[ItemSnap]) -> None:
        """A unit already in the pipeline: check its candidate and move it on."""
        first = unit[0]
        if first.state == State.LANDING:
            return  # counted as landed: the lander finishes it, in order
        c = None
        if first.candidate is not None and first.candidate not in self.discarded:
            c = self.s.candidates.get(first.candidate)
        if c is not None and self.split_ahead:
            self._discard(c, "rebuilt")  # §5: every batch behind a split is rebuilt on its parts
            c = None
        if c is None or first.state == State.QUEUED:
            self._queued(unit)
        elif first.state == State.TESTING:
            self._testing(unit, c)
        elif first.state == State.PASSED:
            self._passed(unit, c)
        else:
            self._failing(unit, c)

    # --- one unit, by state --------------------------------------------------------------------

    def _queued(self, unit: list[ItemSnap]) -> None:
        """Start a candidate for a started unit that has none, if the window has room."""
        if self.paused:
            self._hold(unit, "paused")
        elif self.units >= self.window:
            self._hold(unit, "outside-window")
        else:
            self._start(unit)

    def _testing(self, unit: list[ItemSnap], c: CandidateSnap) -> None:
        """A candidate under test: rebuild it if stale, else read its runs."""
        if not self._valid(c):
            self._discard(c, "rebuilt")
            self._queued(unit)
        elif self.units >= self.window:
            self._discard(c, "outside-window")
            self._hold(unit, "outside-window")
        elif self.abort:
            self._discard(c, "aborted")
            self._hold(unit, "paused")
        else:
            self._progress(unit, c)

    def _progress(self, unit: list[ItemSnap], c: CandidateSnap) -> None:
        """Act on what the candidate's runs say."""
        progress = evaluate(c, self.cfg, self.now)
        self._wake_at(progress.wake_at)
        if progress.outcome == Outcome.PASSED:
            self.actions.append(PassCandidate(c.id))
            self._passed(unit, c, checked=True)
        elif progress.outcome == Outcome.FAILED:
            assert progress.failure is not None
            self._failing(unit, self._fail(c, progress.failure))
        elif progress.outcome == Outcome.INFRA_EXHAUSTED:
            assert progress.failure is not None
            self._fail(c, progress.failure)
            for item in unit:
                self._reject(item.id, "infrastructure", c.id, progress.failure)
        else:
            ids = tuple(item.id for item in unit)
            if self.paused and progress.needs:
                self._hold(unit, "paused")
                return
            self.needs.extend((need, ids) for need in progress.needs)
            self._hold(unit, None)

    def _passed(self, unit: list[ItemSnap], c: CandidateSnap, checked: bool = False) -> None:
        """Land at the head (landing order rule, §4); otherwise wait for the items ahead."""
        if not checked and not self._valid(c):
            self._discard(c, "rebuilt")
            self._queued(unit)
        elif self.units == 0 and not self.paused:
            ids = tuple(item.id for item in unit)
            self.actions.append(Land(c.id, ids))
            for item_id in ids:
                self.over[item_id] = State.LANDING
            self.landed_total += len(ids)
            self.infra_streak = 0
            self._grow(len(ids) if self.cfg.mode != Mode.BATCH else 1)
        else:
            self._hold(unit, "paused" if self.paused else "items-ahead", failing=False,
                       settled=True)

    def _failing(self, unit: list[ItemSnap], c: CandidateSnap) -> None:
        """Reject at the head when the failed tree is head + its bump; split a failed batch;
        retest when an item it assumed left the queue."""
        gone = any(self._state(item) in GONE for item in c.assumed)
        if gone or c.base_external != self.s.external_commits:
            self._discard(c, "assumed-gone")
            self._queued(unit)
        elif len(unit) > 1:
            if self.settled and not self.paused:
                self._split(unit, c)
            else:
                self._hold(unit, "paused" if self.paused else "items-ahead", failing=True)
        elif self.units > 0:
            self._hold(unit, "items-ahead", failing=True)
        elif not self._valid(c):
            self._discard(c, "rebuilt")
            self._queued(unit)
        elif self.paused:
            self._hold(unit, "paused", failing=True)
        else:
            failure = c.failure or Failure("stage-failed")
            self._reject(unit[0].id, failure.kind, c.id, failure)

    # --- effects -------------------------------------------------------------------------------

    def _start(self, unit: list[ItemSnap]) -> None:
        """Build the unit's candidate on the prefix and ask for its first runs."""
        cid = f"c{self.next_candidate}"
        self.next_candidate += 1
        own = tuple(item.id for item in unit)
        if len(unit) == 1:
            configurations = unit[0].configurations
        else:
            union: dict[str, None] = {}
            for item in unit:
                union.update(dict.fromkeys(item.configurations))
            configurations = tuple(union)
        items = (*self.prefix, *own)
        self.actions.append(StartCandidate(cid, items, own, configurations, self.landed_total,
                                           self.s.external_commits))
        order = self.cfg.stage_order
        firsts = [Need(cid, conf, order[conf][0], 0) for conf in configurations if order[conf]]
        if not firsts or self.paused:  # nothing to run, or it waits: the general path says so
            self._progress(unit, CandidateSnap(
                cid, items, own, configurations, State.TESTING, self.landed_total,
                self.s.external_commits, self.now))
            return
        self.needs.extend((need, own) for need in firsts)
        self._hold(unit, None)

    def _split(self, unit: list[ItemSnap], c: CandidateSnap) -> None:
        """Bisection (§5): the failed batch becomes k consecutive parts, each started in place."""
        ways = self.cfg.ways(len(self.s.runners))
        groups: list[tuple[int, list[ItemSnap]]] = []
        for part in parts(unit, ways):
            groups.append((self.next_group, part))
            self.next_group += 1
        self.actions.append(Split(c.id, tuple((g, tuple(i.id for i in part))
                                              for g, part in groups)))
        self._halve()
        for _, part in groups:
            self._queued(part)
        self.split_ahead = True

    def _reject(self, item: str, kind: str, candidate: str | None,
                failure: Failure | None) -> None:
        """Reject an item; count infrastructure streaks and shrink an aimd window."""
        self.actions.append(Reject(item, kind, candidate, failure))
        self.over[item] = State.REJECTED
        if kind == "infrastructure":
            self.infra_streak += 1
            if self.infra_streak >= self.cfg.infra_pause_after and not self.paused:
                self.paused = True
                self.actions.append(PauseQueue("infrastructure"))
        else:
            self.infra_streak = 0
        if kind in SHRINKS_WINDOW:
            self._halve()

    def _discard(self, c: CandidateSnap, why: str) -> None:
        """Drop a candidate and kill its runs."""
        self.actions.append(Discard(c.id, why))
        self.discarded.add(c.id)
        self._kill(c)

    def _fail(self, c: CandidateSnap, failure: Failure) -> CandidateSnap:
        """Mark a candidate failed (fail-fast: its other runs are killed)."""
        self.actions.append(FailCandidate(c.id, failure))
        self._kill(c)
        return replace(c, state=State.FAILING, failure=failure)

    def _kill(self, c: CandidateSnap) -> None:
        """Free the runners of a candidate's running runs."""
        for run in c.runs:
            if run.state == RunState.RUNNING:
                self.killed.add(run.id)

    def _hold(self, unit: list[ItemSnap], reason: str | None, failing: bool = False,
              settled: bool = False) -> None:
        """The unit stays non-terminal ahead of the rest: it takes a window slot."""
        self.units += 1
        if not failing:
            self.prefix.extend(item.id for item in unit)
        if not settled:
            self.settled = False
        if reason is not None:
            self.waiting.extend((item.id, reason) for item in unit)

    # --- admission -----------------------------------------------------------------------------

    def _admit_items(self, i: int) -> str | None:
        """Speculative and serial: waiting items enter one by one while the window has room."""
        items = self.s.items
        n = len(items)
        while i < n:
            item = items[i]
            if item.id in self.over or self._artifact_pending(item):
                i += 1
                continue
            if self.paused or self.draining or self.units >= self.window:
                break
            self.actions.append(Enter((item.id,), self.next_position))
            self.next_position += 1
            self._start([item])
            i += 1
        return self._rest(i, n, "outside-window")

    def _admit_batches(self, i: int) -> str | None:
        """Batch mode (§5): form the next batch from consecutive items of the front priority;
        it starts when full, closed by a second bump of a component, or after batch_max_wait."""
        items = self.s.items
        n = len(items)
        size = max(1, self.cfg.batch_size)
        while i < n and not self.paused and not self.draining and self.units < self.window:
            members: list[ItemSnap] = []
            keys: set[tuple[str, str]] = set()
            closed = False
            j = i
            while j < n and len(members) < size:
                item = items[j]
                if item.id in self.over or self._artifact_pending(item):
                    j += 1
                    continue
                if members and item.priority != members[0].priority:
                    break
                changes = {(item.component, conf) for conf in item.configurations}
                if keys & changes:
                    closed = True
                    break
                members.append(item)
                keys |= changes
                j += 1
            if not members:
                i = j
                continue
            oldest = min(item.submitted_at for item in members)
            if len(members) < size and not closed and self.now < oldest + self.cfg.batch_max_wait:
                self.waiting.extend((item.id, "batch-filling") for item in members)
                self._wake_at(oldest + self.cfg.batch_max_wait)
                return self._rest(j, n, "behind")
            group = self.next_group
            self.next_group += 1
            self.actions.append(Enter(tuple(item.id for item in members), self.next_position,
                                      group))
            self.next_position += len(members)
            self._start(members)
            i = j
        return self._rest(i, n, "outside-window")

    def _artifact_pending(self, item: ItemSnap) -> bool:
        """An item whose artifact is not in the registry yet waits, or is rejected after
        `artifact_wait`, without blocking those behind (§2.2)."""
        if item.artifact_ready:
            return False
        deadline = item.submitted_at + self.cfg.artifact_wait
        if self.now >= deadline:
            self._reject(item.id, "artifact-missing", None, None)
        else:
            self.waiting.append((item.id, "artifact-pending"))
            self._wake_at(deadline)
        return True

    def _rest(self, i: int, n: int, reason: str) -> str | None:
        """The wait reason of every item after the ones looked at."""
        if i >= n:
            return None
        if self.paused:
            return "paused"
        return "draining" if self.draining else reason

    # --- runners, window, drain ----------------------------------------------------------------

    def _assign(self) -> tuple[tuple[str, str | None], ...]:
        """Free runners take the runnable runs of the front-most candidates; pools cap stages."""
        running: dict[str, str | None] = {}
        pool_use: Counter[str] = Counter()
        free: list[str] = []
        for runner in self.s.runners:
            if runner.run is None or runner.run in self.killed:
                running[runner.id] = None
                free.append(runner.id)
            else:
                running[runner.id] = runner.run
                if runner.pool is not None:
                    pool_use[runner.pool] += 1
        taken = 0
        blocked: set[tuple[str, ...]] = set()
        for need, ids in self.needs:
            pool = self.cfg.stages[need.stage].pool
            reason = None
            if pool is not None and pool_use[pool] >= self.cfg.pools.get(pool, len(running)):
                reason = f"pool-full:{pool}"
            elif taken >= len(free):
                reason = "no-runner"
            if reason is not None:
                if ids not in blocked:
                    blocked.add(ids)
                    self.waiting.extend((item, reason) for item in ids)
                continue
            runner_id = free[taken]
            taken += 1
            if pool is not None:
                pool_use[pool] += 1
            running[runner_id] = need.run_id
            self.actions.append(StartRun(need.run_id, need.candidate, need.configuration,
                                         need.stage, need.attempt, runner_id))
        return tuple(running.items())

    def _finish_drain(self) -> None:
        """A drain ends, pausing the queue, once nothing started is left but landings, which
        complete under a pause (§3.5)."""
        if self.draining and not self.paused and self.units == 0:
            self.paused = True
            self.actions.append(PauseQueue("drained"))

    def _window(self) -> int:
        """W for this pass: the stored aimd window, else what the settings give."""
        runners = len(self.s.runners)
        if self.cfg.mode != Mode.SERIAL and self.cfg.window == WindowKind.AIMD \
                and self.s.window is not None:
            return self.s.window
        return self.cfg.initial_window(runners)

    def _grow(self, by: int) -> None:
        """aimd: +1 per landed item (per landed batch in batch mode), capped."""
        if self._aimd():
            self.window = min(self.window + by, self.cfg.aimd_max(len(self.s.runners)))

    def _halve(self) -> None:
        """aimd: halve, rounded down, never below the floor."""
        if self._aimd():
            self.window = max(self.window // 2, self.cfg.window_floor)

    def _aimd(self) -> bool:
        """Whether the window adapts."""
        return self.cfg.mode != Mode.SERIAL and self.cfg.window == WindowKind.AIMD

    # --- lookups -------------------------------------------------------------------------------

    def _state(self, item: str) -> State | None:
        """An item's state as of this pass."""
        return self.over.get(item) or self.s.states.get(item)

    def _valid(self, c: CandidateSnap) -> bool:
        """The candidate's tree is still head + the prefix + its own bumps (§4).

        Landings happen in queue order, so the k items landed since it was built must be the
        first k it assumed, and the rest of what it assumed must be exactly the prefix.
        """
        if c.base_external != self.s.external_commits:
            return False
        landed = self.landed_total - c.base_landed
        assumed = c.assumed
        if landed < 0 or landed > len(assumed):
            return False
        if any(self._state(item) not in LANDED_LIKE for item in assumed[:landed]):
            return False
        return assumed[landed:] == tuple(self.prefix)

    def _wake_at(self, when: float | None) -> None:
        """Ask to be called again at `when` at the latest."""
        if when is not None and (self.wake is None or when < self.wake):
            self.wake = when

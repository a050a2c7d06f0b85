"""The pure rollout reconciler (spec/rollouts.md §5): one pass from (object, observed, now,
settings) to a `Plan`. No I/O, no clock, no randomness; a bad resource never raises.

Hand-written: the dispatch D0–D4 and the status it writes are the specification itself.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lockstep.errors import LockstepError
from lockstep.rollout.hashing import rollout_hash, uuid5_of
from lockstep.rollout.plan import (
    Apply,
    ApplyStateless,
    Done,
    Ending,
    Fail,
    Observed,
    Plan,
    Promote,
    Requeue,
    Route,
    Settings,
    SkipCatchup,
    Step,
    Teardown,
    WriteSpec,
    WriteStatus,
)
from lockstep.rollout.resource import (
    DEFAULT_TIMEOUT,
    LAST_KNOWN_ACTIVE_GENERATION_ANNOTATION,
    NIL_UUID,
    UP_TO_DATE,
    V1ALPHA1,
    V1ALPHA2,
    parse_duration,
    validate,
)

IMMEDIATE = "ImmediatelyPromoteCausingDowntime"
MANUAL = "ManuallyPromote"
CONDITION_STATUS = {"Applying": "Unknown", "ReadyToPromote": "Unknown", "Promoting": "Unknown",
                    "Applied": "True", "WaitingForApproval": "False", "FailedDeploy": "False",
                    "RolloutTimeout": "False"}
_RELEASE_VERSION = re.compile(r"v?([0-9]+(?:\.[0-9]+)*)(?:-(.+))?", re.ASCII)
_WAIT = Requeue(5, 10)
_AGAIN = Requeue(0, 0)


def reconcile(obj: dict[str, Any], observed: Observed, now: datetime,
              settings: Settings) -> Plan:
    """One reconciliation pass (§5.3): the plan the executor runs, in order.

    A bug here must not stop the controller on one object: anything unexpected becomes `Fail`
    (logged and retried with backoff), never an exception."""
    try:
        return _reconcile(obj, observed, now, settings)
    except Exception as exc:  # the controller survives its own bugs
        return Plan((Fail(f"internal error in the reconciler: {type(exc).__name__}: {exc}"),))


# --- reading the object ------------------------------------------------------------------------


def _dict(value: object) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    """`value` if it is a string, else None."""
    return value if isinstance(value, str) else None


def _count(value: object) -> int | None:
    """A JSON integer ≥ 0 (booleans are not integers here)."""
    return value if type(value) is int and value >= 0 else None


def _nil(value: object) -> bool:
    """A v1alpha1 "nil" UUID: the nil UUID, null, absent or `""` (§4.1)."""
    return value is None or value == "" or value == NIL_UUID or not isinstance(value, str)


def rfc3339(moment: datetime) -> str:
    """`moment` in UTC as RFC 3339 with a `Z` (fractional seconds only when present); a naive
    datetime is taken as UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat() + "Z"


def parse_rfc3339(text: object) -> datetime | None:
    """The aware UTC time an RFC 3339 string names, or None if it names none."""
    if not isinstance(text, str) or "T" not in text.upper():
        return None
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def release_key(tag: str) -> tuple[tuple[int, ...], int, str] | None:
    """The sort key of a release tag (D2d): optional `v`, numeric dot fields, and a `-suffix`
    sorting before the bare tuple; None when the tag does not parse (the check is then off)."""
    match = _RELEASE_VERSION.fullmatch(tag)
    if match is None:
        return None
    numbers = tuple(int(part) for part in match[1].split("."))
    return (numbers, 0, match[2]) if match[2] is not None else (numbers, 1, "")


def is_rollback(new: str, old: str) -> bool:
    """Whether release `new` sorts strictly before `old` (both parsable)."""
    new_key, old_key = release_key(new), release_key(old)
    return new_key is not None and old_key is not None and new_key < old_key


@dataclass(frozen=True)
class _Validity:
    """What validating the stored spec found: the problem (None if valid), the timeout in force,
    how it is written in messages, and warnings."""

    problem: str | None
    timeout: timedelta
    timeout_text: str
    warnings: tuple[str, ...]


def _validity(obj: dict[str, Any], settings: Settings) -> _Validity:
    """Validate what the user wrote (apiVersion, kind, metadata, spec — never our status). An
    invalid `rolloutRequestTimeout` is not fatal: 24 h is used with a warning (§5.7)."""
    default = _Validity(None, parse_duration(DEFAULT_TIMEOUT), DEFAULT_TIMEOUT, ())
    expected = V1ALPHA1 if settings.api == "v1alpha1" else V1ALPHA2
    if obj.get("apiVersion") != expected:
        return _Validity(f"apiVersion {obj.get('apiVersion')!r} is not {expected} (the "
                         f"controller runs in {settings.api} mode)", default.timeout,
                         default.timeout_text, ())
    user = {k: copy.deepcopy(obj[k]) for k in ("apiVersion", "kind", "metadata", "spec")
            if k in obj}
    spec = user.get("spec")
    timeout, text = default.timeout, default.timeout_text
    warnings: tuple[str, ...] = ()
    if isinstance(spec, dict) and spec.get("rolloutRequestTimeout") is not None:
        written = spec["rolloutRequestTimeout"]
        try:
            timeout, text = parse_duration(written), written
        except LockstepError as exc:
            del spec["rolloutRequestTimeout"]
            warnings = (f"{exc.one_line()}; using {DEFAULT_TIMEOUT}",)
    try:
        validate(user)
    except LockstepError as exc:
        return _Validity(exc.one_line(), timeout, text, warnings)
    return _Validity(None, timeout, text, warnings)


def timeout_deadline(obj: dict[str, Any], settings: Settings) -> datetime | None:
    """When the rollout in progress (Applying or ReadyToPromote) reaches its timeout, so the
    executor can schedule a pass then: a parked rollout otherwise sees no pass until an edit."""
    if not isinstance(obj, dict):
        return None
    cond = _condition(_dict(obj.get("status"))) or {}
    started = parse_rfc3339(cond.get("lastTransitionTime"))
    if cond.get("reason") not in ("Applying", "ReadyToPromote") or started is None:
        return None
    return started + _validity(obj, settings).timeout


# --- the status --------------------------------------------------------------------------------


def _condition(status: dict[str, Any]) -> dict[str, Any] | None:
    """C: the `UpToDate` condition, if the status has one."""
    conditions = status.get("conditions")
    if isinstance(conditions, list):
        for cond in conditions:
            if isinstance(cond, dict) and cond.get("type") == UP_TO_DATE:
                return cond
    return None


def _without_times(status: dict[str, Any]) -> dict[str, Any]:
    """The status with every condition's `lastTransitionTime` removed (§5.8 write skipping)."""
    out = dict(status)
    conditions = out.get("conditions")
    if isinstance(conditions, list):
        out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                             if isinstance(c, dict) else c for c in conditions]
    return out


@dataclass
class _Pass:
    """One pass in progress: the facts read, the steps so far and the status in force (the
    stored one, then each one the plan writes)."""

    obj: dict[str, Any]
    spec: dict[str, Any]
    observed: Observed
    now: datetime
    settings: Settings
    generation: int
    validity: _Validity
    status: dict[str, Any]
    steps: list[Step]

    @property
    def v1(self) -> bool:
        """Whether v1alpha1 semantics apply."""
        return self.settings.api == "v1alpha1"

    @property
    def active(self) -> int:
        """A: the active generation of the status in force."""
        return _count(self.status.get("activeGeneration")) or 0

    @property
    def candidate(self) -> int:
        """N = A + 1, the only possible candidate."""
        return self.active + 1

    @property
    def cond(self) -> dict[str, Any] | None:
        """C in the status in force."""
        return _condition(self.status)

    @property
    def reason(self) -> str | None:
        """C's reason, if any."""
        return _str((self.cond or {}).get("reason"))

    def get(self, member: str) -> str | None:
        """A string member of the status in force (None if absent, null or not a string)."""
        return _str(self.status.get(member))

    def status_with(self, reason: str, message: str, members: dict[str, Any] | None = None, *,
                    transition_now: bool = False) -> dict[str, Any]:
        """The status in force with `members` set and an `UpToDate` condition of `reason`;
        `lastTransitionTime` carried forward when the condition status stays the same (§2.4)."""
        new = copy.deepcopy(self.status)
        new.update(members or {})
        always: dict[str, Any] = (
            {"lastCompletedRolloutRequest": NIL_UUID, "resourcesHash": ""} if self.v1
            else {"requestedRolloutHash": None, "lastCompletedRolloutHash": None})
        for key, value in always.items():
            new.setdefault(key, value)
        new["observedGeneration"] = self.generation
        condition_status = CONDITION_STATUS[reason]
        previous = self.cond
        when = rfc3339(self.now)
        if (not transition_now and previous is not None
                and previous.get("status") == condition_status
                and parse_rfc3339(previous.get("lastTransitionTime")) is not None):
            when = previous["lastTransitionTime"]
        new["conditions"] = [{"type": UP_TO_DATE, "status": condition_status, "reason": reason,
                              "message": message, "lastTransitionTime": when,
                              "observedGeneration": self.generation}]
        return new

    def write(self, new: dict[str, Any], *, times_matter: bool = False) -> None:
        """Write `new` unless it equals the status in force with times ignored (§5.8). Times
        matter after D2b (the restart resets the clock) and when the stored one is garbled."""
        stored_time = (self.cond or {}).get("lastTransitionTime", rfc3339(self.now))
        same = new == self.status if times_matter or parse_rfc3339(stored_time) is None \
            else _without_times(new) == _without_times(self.status)
        if not same:
            self.steps.append(WriteStatus(new))
        self.status = new

    def stateless(self) -> ApplyStateless | None:
        """The stateless step for a valid spec (§5.8), from the status in force."""
        if self.validity.problem is not None:
            return None
        components = self.spec.get("components")
        if isinstance(components, dict):
            return ApplyStateless(components={
                name: copy.deepcopy(c) for name, c in components.items()
                if isinstance(c, dict) and c.get("stateless") is True})
        return ApplyStateless(release=self.get("lastCompletedRelease"))

    def end(self, ending: Ending) -> Plan:
        """The plan: the steps, `ApplyStateless` unless failing or invalid, and `ending`."""
        steps: list[Step | Ending] = list(self.steps)
        stateless = self.stateless()
        if stateless is not None and not isinstance(ending, Fail):
            steps.append(stateless)
        steps.append(ending)
        return Plan(tuple(steps), self.validity.warnings)


# --- the pass ----------------------------------------------------------------------------------


def _reconcile(obj: dict[str, Any], observed: Observed, now: datetime,
               settings: Settings) -> Plan:
    """The pass proper: the v1alpha1 request fill-in, then D0, D1, D1b and D2–D4."""
    if not isinstance(obj, dict):
        return Plan((Fail("the stored Environment is not a JSON object"),))
    metadata = _dict(obj.get("metadata"))
    spec = _dict(obj.get("spec"))
    if settings.api == "v1alpha1" and isinstance(obj.get("spec"), dict) \
            and _nil(spec.get("requestRollout")):
        if observed.fresh_uuid is None:
            return Plan((Fail("no fresh UUID was observed for the nil requestRollout"),))
        return Plan((WriteSpec({"requestRollout": observed.fresh_uuid}), Done()))
    stored = obj.get("status")
    p = _Pass(obj=obj, spec=spec, observed=observed, now=now, settings=settings,
              generation=_count(metadata.get("generation")) or 0,
              validity=_validity(obj, settings),
              status=copy.deepcopy(stored) if isinstance(stored, dict) else {}, steps=[])
    if not isinstance(stored, dict) or _count(stored.get("activeGeneration")) is None:
        return _initial(p, metadata)                                                     # D0
    if p.reason == "Promoting":
        return _promote(p)                                                               # D1
    if p.validity.problem is not None:                                                   # D1b
        p.write(p.status_with("FailedDeploy", f"Invalid spec: {p.validity.problem}"))
        return p.end(Done())
    return _dispatch(p, rollout_hash(obj))


def _initial(p: _Pass, metadata: dict[str, Any]) -> Plan:
    """D0: the initial status, `activeGeneration` seeded from the annotation."""
    seed = _dict(metadata.get("annotations")).get(LAST_KNOWN_ACTIVE_GENERATION_ANNOTATION)
    active = int(seed) if isinstance(seed, str) and seed.isascii() and seed.isdigit() else 0
    status: dict[str, Any] = {"activeGeneration": active}
    if p.v1:
        status |= {"lastCompletedRolloutRequest": NIL_UUID, "resourcesHash": ""}
    else:
        status |= {"requestedRolloutHash": None, "lastCompletedRolloutHash": None}
    status |= {"lastCompletedRelease": None, "conditions": [],
               "observedGeneration": p.generation}
    p.steps.append(WriteStatus(status))
    p.status = status
    return p.end(_AGAIN)


@dataclass(frozen=True)
class Predicates:
    """The predicates of §5.2 for one pass (H the rollout hash, C the `UpToDate` condition)."""

    promoting: bool
    changed: bool
    requested: bool
    in_progress: bool
    forced: bool
    ready_marker: bool
    superseded: bool


def predicates(obj: dict[str, Any], observed: Observed, settings: Settings,
               h: str) -> Predicates:
    """§5.2 for `obj` (status present) whose rollout hash is `h`, in the settings' API mode."""
    status, spec = _dict(obj.get("status")), _dict(obj.get("spec"))
    cond = _condition(status) or {}
    reason = cond.get("reason")
    in_progress = cond.get("status") == "Unknown"
    strategy = spec.get("rolloutStrategy")
    force_promote, request = _str(spec.get("forcePromote")), _str(spec.get("requestRollout"))
    requested_hash = _str(status.get("requestedRolloutHash"))
    candidate = observed.generation((_count(status.get("activeGeneration")) or 0) + 1)
    stale_candidate = candidate is not None and candidate.rollout_hash != h
    if settings.api == "v1alpha1":
        resources_hash = _str(status.get("resourcesHash"))
        # ReadyToPromote stores H in resourcesHash while the rollout is still pending, so a
        # parked rollout counts as changed (the design's hash covered the generation number).
        changed = h != resources_hash or reason == "ReadyToPromote"
        return Predicates(
            promoting=reason == "Promoting", changed=changed,
            requested=request != _str(status.get("lastCompletedRolloutRequest")),
            in_progress=in_progress,
            forced=strategy == IMMEDIATE or (not _nil(force_promote)
                                             and force_promote in (request, h)),
            ready_marker=reason == "ReadyToPromote" and resources_hash == h,
            superseded=stale_candidate)
    changed = h != _str(status.get("lastCompletedRolloutHash"))
    return Predicates(
        promoting=reason == "Promoting", changed=changed, requested=changed,
        in_progress=in_progress,
        forced=strategy == IMMEDIATE or (
            requested_hash is not None and force_promote is not None
            and force_promote in (requested_hash, uuid5_of(requested_hash))),
        ready_marker=reason == "ReadyToPromote" and requested_hash == h,
        superseded=(in_progress and requested_hash != h) or stale_candidate)


def _dispatch(p: _Pass, h: str) -> Plan:
    """D2–D4 on a valid spec whose rollout hash is `h`."""
    n, request = p.candidate, _str(p.spec.get("requestRollout"))
    reason, cond = p.reason, p.cond or {}
    strategy = p.spec.get("rolloutStrategy")
    requested_hash = p.get("requestedRolloutHash")
    candidate = p.observed.generation(n)
    facts = predicates(p.obj, p.observed, p.settings, h)
    changed, requested, forced = facts.changed, facts.requested, facts.forced
    ready_marker, superseded, in_progress = facts.ready_marker, facts.superseded, facts.in_progress

    if not changed:                                                                      # D4
        if candidate is not None:
            p.steps.append(Teardown(n))
        if not cond or reason != "Applied" or requested \
                or cond.get("observedGeneration") != p.generation:
            # An Applied status only re-observed keeps its message (R4: only the generation moves).
            kept = _str(cond.get("message")) if reason == "Applied" and not requested else None
            message = kept or f"No changes found from generation {p.active}"
            p.write(p.status_with("Applied", message, (
                {"lastCompletedRolloutRequest": request} if p.v1
                else {"requestedRolloutHash": h})))
        return p.end(Done())
    if not requested:                                                                    # D3
        if candidate is not None:
            p.steps.append(Teardown(n))
        if reason != "RolloutTimeout":
            p.write(p.status_with("WaitingForApproval",
                                  f"Changes detected, waiting for approval for generation {n}"))
        return p.end(Done())

    applying: dict[str, Any] = {"resourcesHash": ""} if p.v1 else {"requestedRolloutHash": h}
    if not p.v1 and reason == "RolloutTimeout" and requested_hash == h:                 # D2a
        return p.end(Done())
    if superseded:                                                                       # D2b
        p.steps.append(Teardown(n))
        p.write(p.status_with("Applying", f"Applying changes for generation {n}",
                              applying, transition_now=True), times_matter=True)
        return p.end(_AGAIN)
    started = parse_rfc3339(cond.get("lastTransitionTime"))
    if in_progress and not forced and started is not None \
            and _utc(p.now) - started >= p.validity.timeout:                           # D2c
        p.steps.append(Teardown(n))
        cancelled: dict[str, Any] = (
            {"lastCompletedRolloutRequest": request, "resourcesHash": ""} if p.v1 else {})
        p.write(p.status_with(
            "RolloutTimeout", f"Cancelled rollout to generation {n} after it exceeded the "
            f"rollout timeout of {p.validity.timeout_text}", cancelled))
        return p.end(Done())
    release, last_release = _str(p.spec.get("release")), p.get("lastCompletedRelease")
    if release is not None and last_release is not None \
            and not p.settings.allow_rollback and is_rollback(release, last_release):   # D2d
        p.write(p.status_with("FailedDeploy",
                              f"Refusing to roll back from {last_release} to {release}"))
        return p.end(Done())
    if not ready_marker:                                                                 # D2e
        p.write(p.status_with("Applying", f"Applying changes for generation {n}", applying))
    if strategy == IMMEDIATE and p.active >= 1:                                          # D2f
        p.steps.append(Teardown(p.active))
    p.steps.append(Apply(n, _failed(p)))                                                 # D2g
    if not _ready(p, forced):                                                            # D2h
        return p.end(_WAIT)
    marked: dict[str, Any] = {"resourcesHash": h} if p.v1 else {}
    if p.active >= 1 and strategy == MANUAL and not forced:                              # D2i
        p.write(p.status_with("ReadyToPromote", f"Ready to promote generation {n}", marked))
        return p.end(Done())
    p.write(p.status_with("Promoting", f"Attempting to promote generation {n}", marked))
    return _promote(p, h)


def _utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime (naive is taken as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _failed(p: _Pass) -> dict[str, Any]:
    """The FailedDeploy status an `Apply` or `SkipCatchup` failure writes; the executor appends
    the error to the message. The hashes stay as the status in force has them."""
    return p.status_with("FailedDeploy", f"Failed to apply changes for generation {p.candidate}: ")


def _ready(p: _Pass, forced: bool) -> bool:
    """§5.4, appending a `SkipCatchup` per stateful component when forced."""
    n = p.candidate
    generation = p.observed.generation(n)
    leaders = sorted(p.observed.leaders.items())
    components = p.spec.get("components")
    expected = {name for name, c in components.items()
                if not (isinstance(c, dict) and c.get("stateless") is True)} \
        if isinstance(components, dict) else set()
    # A stateful component with no observed status counts as unreachable; so does an empty map.
    if generation is None or not generation.ready or not leaders \
            or not expected <= p.observed.leaders.keys() \
            or any(status == "unreachable" for _, status in leaders):
        return False
    if forced:
        failure = _failed(p)
        p.steps.extend(SkipCatchup(n, component, failure) for component, _ in leaders)
        return True
    return all(status in ("ReadyToPromote", "Promoting", "IsLeader") for _, status in leaders)


def _promote(p: _Pass, h: str | None = None) -> Plan:
    """§5.5: promote N one component at a time; once all lead, route to N, tear down A and
    record what N recorded. Nothing else happens while Promoting."""
    n, active = p.candidate, p.active
    generation = p.observed.generation(n)
    if generation is None or not p.observed.leaders:  # not visible (yet): never abandon, wait
        return p.end(_WAIT)
    for component, status in sorted(p.observed.leaders.items()):
        if status != "IsLeader":
            p.steps.append(Promote(n, component))
            return p.end(_WAIT)
    p.steps.append(Route(n))
    if active >= 1:
        p.steps.append(Teardown(active))
    if p.v1:
        recorded: dict[str, Any] = {
            "lastCompletedRolloutRequest":
                generation.request or p.get("lastCompletedRolloutRequest") or NIL_UUID,
            "resourcesHash": generation.rollout_hash or p.get("resourcesHash") or ""}
    else:
        completed = p.get("requestedRolloutHash") or generation.rollout_hash
        recorded = {"lastCompletedRolloutHash": completed, "requestedRolloutHash": completed}
    p.write(p.status_with("Applied", f"Successfully applied changes for generation {n}",
                          {"activeGeneration": n, "lastCompletedRelease": generation.release}
                          | recorded))
    if p.validity.problem is not None:
        return p.end(_AGAIN)  # the next pass reports the invalid spec
    h = h or rollout_hash(p.obj)
    more = (h != p.get("resourcesHash")
            or _str(p.spec.get("requestRollout")) != p.get("lastCompletedRolloutRequest")) \
        if p.v1 else h != p.get("lastCompletedRolloutHash")
    return p.end(_AGAIN if more else Done())

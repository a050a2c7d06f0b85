"""The pure reconciler (spec/rollouts.md §5): the acceptance rows R1–R16 and the controller side
of X2–X5, X9, X10 as exact plans, the predicates of §5.2, D0–D4, the timeout boundary, skipped
status writes, bad resources (never an exception) and purity."""

from __future__ import annotations

import copy
import datetime as dt
import random
import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from lockstep.rollout import reconcile as reconcile_module
from lockstep.rollout.convert import down, up
from lockstep.rollout.hashing import rollout_hash, uuid5_of
from lockstep.rollout.plan import (
    Apply,
    ApplyStateless,
    Done,
    Fail,
    Generation,
    Observed,
    Plan,
    Promote,
    Requeue,
    Route,
    Settings,
    SkipCatchup,
    Teardown,
    WriteSpec,
    WriteStatus,
)
from lockstep.rollout.reconcile import (
    CONDITION_STATUS,
    Predicates,
    is_rollback,
    predicates,
    reconcile,
    release_key,
    rfc3339,
    timeout_deadline,
)
from lockstep.rollout.resource import NIL_UUID, V1ALPHA1, V1ALPHA2
from tests.purity import outside_world_closed

T0 = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=5)
GEN = 7  # metadata.generation of the objects below
V2 = Settings()
V1 = Settings(api="v1alpha1")
R1 = "11111111-1111-4111-8111-111111111111"
R2 = "22222222-2222-4222-8222-222222222222"
WEB = {"web": {"image": "example/web:1.0.0", "stateless": True}}
STATELESS = ApplyStateless(components=WEB)


def spec(version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    """A components-mode spec: stateful `db` and `queue` at `version`, stateless `web`."""
    return {"components": {"db": {"image": f"example/db:{version}"},
                           "queue": {"image": f"example/queue:{version}"},
                           **copy.deepcopy(WEB)}} | extra


def env(spec_: dict[str, Any], status: dict[str, Any] | None = None, *,
        generation: int = GEN, annotations: dict[str, str] | None = None,
        api: str = V1ALPHA2) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": api, "kind": "Environment",
                           "metadata": {"name": "prod", "generation": generation},
                           "spec": spec_}
    if annotations:
        obj["metadata"]["annotations"] = annotations
    if status is not None:
        obj["status"] = status
    return obj


def h(spec_: dict[str, Any], **kw: Any) -> str:
    return rollout_hash(env(spec_, **kw))


H, H2, H3 = h(spec("1.0.0")), h(spec("2.0.0")), h(spec("3.0.0"))


def cond(reason: str, message: str, since: datetime = T0, gen: int = GEN) -> dict[str, Any]:
    return {"type": "UpToDate", "status": CONDITION_STATUS[reason], "reason": reason,
            "message": message, "lastTransitionTime": rfc3339(since), "observedGeneration": gen}


def v2(active: int, requested: str | None, completed: str | None,
       c: dict[str, Any] | None = None, *, release: str | None = None,
       gen: int = GEN) -> dict[str, Any]:
    return {"activeGeneration": active, "requestedRolloutHash": requested,
            "lastCompletedRolloutHash": completed, "lastCompletedRelease": release,
            "conditions": [c] if c else [], "observedGeneration": gen}


def v1(active: int, request: str, resources: str, c: dict[str, Any] | None = None, *,
       release: str | None = None, gen: int = GEN) -> dict[str, Any]:
    return {"activeGeneration": active, "lastCompletedRolloutRequest": request,
            "resourcesHash": resources, "lastCompletedRelease": release,
            "conditions": [c] if c else [], "observedGeneration": gen}


def failed(status: dict[str, Any], n: int, now: datetime) -> dict[str, Any]:
    """The FailedDeploy status an Apply/SkipCatchup of generation n carries."""
    gen = status["observedGeneration"]
    return status | {"conditions": [cond(
        "FailedDeploy", f"Failed to apply changes for generation {n}: ", now, gen)]}


def applied(active: int, hash_: str, since: datetime = T0, **kw: Any) -> dict[str, Any]:
    return v2(active, hash_, hash_,
              cond("Applied", f"Successfully applied changes for generation {active}", since),
              **kw)


def applying(active: int, requested: str, completed: str | None, since: datetime = T0,
             **kw: Any) -> dict[str, Any]:
    return v2(active, requested, completed,
              cond("Applying", f"Applying changes for generation {active + 1}", since), **kw)


def gen(n: int, hash_: str | None, *, ready: bool = True, release: str | None = None,
        request: str | None = None) -> Generation:
    return Generation(n, hash_, release, request, ready)


def seen(*generations: Generation, fresh: str | None = None, **leaders: Any) -> Observed:
    return Observed(generations=generations, leaders=leaders, fresh_uuid=fresh)


def run(obj: dict[str, Any], observed: Observed | None = None, now: datetime = T0,
        settings: Settings = V2) -> Plan:
    return reconcile(obj, observed or Observed(), now, settings)


def after(obj: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The object once the executor ran `plan`'s status writes."""
    out = copy.deepcopy(obj)
    for status in plan.statuses():
        out["status"] = copy.deepcopy(dict(status))
    return out


def edit(obj: dict[str, Any], new_spec: dict[str, Any]) -> dict[str, Any]:
    """A spec edit: metadata.generation grows."""
    out = copy.deepcopy(obj)
    out["spec"] = new_spec
    out["metadata"]["generation"] += 1
    return out


BOTH_READY = {"db": "ReadyToPromote", "queue": "ReadyToPromote"}
BOTH_LEAD = {"db": "IsLeader", "queue": "IsLeader"}


# --- R1–R16 ------------------------------------------------------------------------------------


def test_r1_new_object_first_deploy_ignores_manual_promotion() -> None:
    s = spec(rolloutStrategy="ManuallyPromote")
    hm = h(s)
    obj = env(s)
    first = run(obj)
    assert first.steps == (WriteStatus(v2(0, None, None)), STATELESS, Requeue(0, 0))

    obj = after(obj, first)
    second = run(obj)
    start = applying(0, hm, None)
    assert second.steps == (WriteStatus(start), Apply(1, failed(start, 1, T0)), STATELESS,
                            Requeue(5, 10))

    obj = after(obj, second)  # generation 1 booted with no shared state: it leads at once
    third = run(obj, seen(gen(1, hm), **BOTH_LEAD), now=LATER)
    promoting = v2(0, hm, None, cond("Promoting", "Attempting to promote generation 1"))
    assert third.steps == (Apply(1, failed(start, 1, LATER)), WriteStatus(promoting), Route(1),
                           WriteStatus(applied(1, hm, LATER)), STATELESS, Done())


def test_r2_wait_until_ready_promotes_after_readiness() -> None:
    rest = applied(3, H, T0 - timedelta(days=1))
    obj = edit(env(spec("1.0.0"), rest), spec("2.0.0"))
    g = GEN + 1
    start = v2(3, H2, H, cond("Applying", "Applying changes for generation 4", T0, g), gen=g)
    p = run(obj, seen(gen(3, H)))
    assert p.steps == (WriteStatus(start), Apply(4, failed(start, 4, T0)), STATELESS,
                       Requeue(5, 10))
    obj = after(obj, p)

    waiting = run(obj, seen(gen(3, H), gen(4, H2), db="Initializing", queue="ReadyToPromote"),
                  now=LATER)
    assert waiting.steps == (Apply(4, failed(start, 4, LATER)), STATELESS, Requeue(5, 10))

    ready = run(obj, seen(gen(3, H), gen(4, H2), **BOTH_READY), now=LATER)
    promoting = v2(3, H2, H, cond("Promoting", "Attempting to promote generation 4", T0, g),
                   gen=g)
    assert ready.steps == (Apply(4, failed(start, 4, LATER)), WriteStatus(promoting),
                           Promote(4, "db"), STATELESS, Requeue(5, 10))
    obj = after(obj, ready)

    one = run(obj, seen(gen(3, H), gen(4, H2), db="IsLeader", queue="ReadyToPromote"))
    assert one.steps == (Promote(4, "queue"), STATELESS, Requeue(5, 10))
    done = run(obj, seen(gen(3, H), gen(4, H2), **BOTH_LEAD), now=LATER)
    final = v2(4, H2, H2, cond("Applied", "Successfully applied changes for generation 4", LATER,
                               g), gen=g)
    assert done.steps == (Route(4), Teardown(3), WriteStatus(final), STATELESS, Done())


def _parked() -> tuple[dict[str, Any], str]:
    """ManuallyPromote, A = 3, generation 4 ReadyToPromote for the new hash (Applying since T0)."""
    s = spec("2.0.0", rolloutStrategy="ManuallyPromote")
    hm = h(s)
    parked = v2(3, hm, H, cond("ReadyToPromote", "Ready to promote generation 4"))
    return env(s, parked), hm


def test_r3_manual_promotion_parks_keeping_the_start_time() -> None:
    s = spec("2.0.0", rolloutStrategy="ManuallyPromote")
    hm = h(s)
    start = applying(3, hm, H)
    p = run(env(s, start), seen(gen(3, H), gen(4, hm), **BOTH_READY), now=LATER)
    parked = v2(3, hm, H, cond("ReadyToPromote", "Ready to promote generation 4", T0))
    assert p.steps == (Apply(4, failed(start, 4, LATER)), WriteStatus(parked), STATELESS, Done())
    # parked: later passes neither write nor promote
    obj = after(env(s, start), p)
    assert run(obj, seen(gen(3, H), gen(4, hm), **BOTH_READY), now=LATER).steps == (
        Apply(4, failed(parked, 4, LATER)), STATELESS, Done())


@pytest.mark.parametrize("value", ["hash", "uuid5"])
def test_r3_x9_force_promote_skips_catchup_and_promotes(value: str) -> None:
    obj, hm = _parked()
    obj = edit(obj, obj["spec"] | {"forcePromote": hm if value == "hash" else uuid5_of(hm)})
    p = run(obj, seen(gen(3, H), gen(4, hm), db="Initializing", queue="ReadyToPromote"),
            now=LATER)
    g = GEN + 1
    parked = obj["status"]
    promoting = v2(3, hm, H, cond("Promoting", "Attempting to promote generation 4", T0, g),
                   gen=g)
    failure = failed(parked | {"observedGeneration": g}, 4, LATER)
    failure["conditions"][0]["observedGeneration"] = g
    assert p.steps == (Apply(4, failure), SkipCatchup(4, "db", failure),
                       SkipCatchup(4, "queue", failure), WriteStatus(promoting),
                       Promote(4, "db"), STATELESS, Requeue(5, 10))


def test_r3_a_stale_force_promote_does_nothing() -> None:
    obj, hm = _parked()
    obj = edit(obj, obj["spec"] | {"forcePromote": H})
    p = run(obj, seen(gen(3, H), gen(4, hm), **BOTH_READY), now=LATER)
    g = GEN + 1
    parked = v2(3, hm, H, cond("ReadyToPromote", "Ready to promote generation 4", T0, g), gen=g)
    assert not [s for s in p.steps if isinstance(s, SkipCatchup | Promote | Teardown)]
    assert p.statuses() == [parked]  # only the observed generation moves
    assert p.ending == Done()


def test_r4_force_promote_or_stateless_edits_start_no_rollout() -> None:
    rest = applied(3, H, T0 - timedelta(days=1))
    obj = env(spec("1.0.0"), rest)
    g = GEN + 1
    observed = seen(gen(3, H))
    reobserved = rest | {"observedGeneration": g,
                         "conditions": [rest["conditions"][0] | {"observedGeneration": g}]}

    forced = run(edit(obj, spec("1.0.0", forcePromote=H2)), observed, now=LATER)
    assert forced.steps == (WriteStatus(reobserved), STATELESS, Done())

    new_web = spec("1.0.0")
    new_web["components"]["web"]["image"] = "example/web:1.1.0"
    web = run(edit(obj, new_web), observed, now=LATER)
    assert web.steps == (WriteStatus(reobserved), ApplyStateless(components={
        "web": {"image": "example/web:1.1.0", "stateless": True}}), Done())


@pytest.mark.parametrize("change", ["annotation", "strategy"])
def test_r4_annotation_or_strategy_changes_roll_out(change: str) -> None:
    rest = applied(3, H, T0 - timedelta(days=1))
    obj = edit(env(spec("1.0.0"), rest),
               spec("1.0.0", rolloutStrategy="ManuallyPromote") if change == "strategy"
               else spec("1.0.0"))
    if change == "annotation":
        obj["metadata"]["annotations"] = {"lockstep.dev/force-rollout": "node-pool-upgrade-1"}
    new = rollout_hash(obj)
    assert new != H
    p = run(obj, seen(gen(3, H)), now=LATER)
    g = GEN + 1
    start = v2(3, new, H, cond("Applying", "Applying changes for generation 4", LATER, g), gen=g)
    assert p.steps == (WriteStatus(start), Apply(4, failed(start, 4, LATER)), STATELESS,
                       Requeue(5, 10))


@pytest.mark.parametrize("phase", ["Applying", "ReadyToPromote"])
def test_r5_a_superseded_candidate_is_torn_down_and_restarted(phase: str) -> None:
    message = {"Applying": "Applying changes for generation 4",
               "ReadyToPromote": "Ready to promote generation 4"}[phase]
    pending = v2(3, H2, H, cond(phase, message))
    obj = edit(env(spec("2.0.0"), pending), spec("3.0.0"))
    g = GEN + 1
    p = run(obj, seen(gen(3, H), gen(4, H2), **BOTH_READY), now=LATER)
    restarted = v2(3, H3, H, cond("Applying", "Applying changes for generation 4", LATER, g),
                   gen=g)
    assert p.steps == (Teardown(4), WriteStatus(restarted), STATELESS, Requeue(0, 0))
    # the next pass applies 4 afresh for H3, the clock running from the restart
    nxt = run(after(obj, p), seen(gen(3, H)), now=LATER + timedelta(seconds=1))
    assert nxt.steps == (Apply(4, failed(restarted, 4, LATER + timedelta(seconds=1))),
                         STATELESS, Requeue(5, 10))


def test_r6_an_edit_during_promoting_rolls_out_next() -> None:
    promoting = v2(3, H2, H, cond("Promoting", "Attempting to promote generation 4"))
    obj = edit(env(spec("2.0.0"), promoting), spec("3.0.0"))
    g = GEN + 1
    p = run(obj, seen(gen(3, H), gen(4, H2), **BOTH_LEAD), now=LATER)
    done = v2(4, H2, H2, cond("Applied", "Successfully applied changes for generation 4", LATER,
                              g), gen=g)
    assert p.steps == (Route(4), Teardown(3), WriteStatus(done), STATELESS, Requeue(0, 0))
    nxt = run(after(obj, p), seen(gen(4, H2)), now=LATER)
    start = v2(4, H3, H2, cond("Applying", "Applying changes for generation 5", LATER, g), gen=g)
    assert nxt.steps == (WriteStatus(start), Apply(5, failed(start, 5, LATER)), STATELESS,
                         Requeue(5, 10))


@pytest.mark.parametrize(("leaders", "expected"), [
    (BOTH_READY, (Promote(4, "db"), STATELESS, Requeue(5, 10))),  # killed before the call
    ({"db": "Promoting", "queue": "ReadyToPromote"},  # killed during it: promote is idempotent
     (Promote(4, "db"), STATELESS, Requeue(5, 10))),
    ({"db": "IsLeader", "queue": "ReadyToPromote"}, (Promote(4, "queue"), STATELESS,
                                                     Requeue(5, 10))),
])
def test_r7_a_restart_while_promoting_resumes_promotion(leaders: dict[str, str],
                                                        expected: tuple[Any, ...]) -> None:
    promoting = v2(3, H2, H, cond("Promoting", "Attempting to promote generation 4"))
    obj = env(spec("2.0.0"), promoting)
    # even days later: Promoting never times out
    assert run(obj, seen(gen(3, H), gen(4, H2), **leaders),
               now=T0 + timedelta(days=3)).steps == expected


def test_r8_a_failed_promote_keeps_promoting_whatever_else_changed() -> None:
    promoting = v2(3, H2, H, cond("Promoting", "Attempting to promote generation 4"))
    base = env(spec("2.0.0", rolloutRequestTimeout="1s"), promoting)
    invalid = edit(base, {"release": "v2026.11.3", "components": {}})
    reverted = edit(base, spec("1.0.0"))
    for obj in (base, invalid, reverted):
        p = run(obj, seen(gen(3, H), gen(4, H2), **BOTH_READY), now=T0 + timedelta(days=2))
        assert [s for s in p.steps if not isinstance(s, ApplyStateless)] == [
            Promote(4, "db"), Requeue(5, 10)]


def _r9_obj(**extra: Any) -> tuple[dict[str, Any], str]:
    s = spec("2.0.0", **extra)
    hm = h(s)
    return env(s, v2(3, hm, H, cond("ReadyToPromote", "Ready to promote generation 4", T0))), hm


def test_r9_a_rollout_past_its_timeout_is_cancelled() -> None:
    obj, hm = _r9_obj(rolloutStrategy="ManuallyPromote")
    now = T0 + timedelta(hours=25)
    p = run(obj, seen(gen(3, H), gen(4, hm), **BOTH_READY), now=now)
    cancelled = v2(3, hm, H, cond(
        "RolloutTimeout",
        "Cancelled rollout to generation 4 after it exceeded the rollout timeout of 24h", now))
    assert p.steps == (Teardown(4), WriteStatus(cancelled), STATELESS, Done())
    # D2a: later passes do nothing, the active generation keeps serving
    obj = after(obj, p)
    assert run(obj, seen(gen(3, H)), now=now + timedelta(days=1)).steps == (STATELESS, Done())
    # a new forceRollout changes the hash and restarts (False → Unknown: the clock restarts)
    new = spec("2.0.0", rolloutStrategy="ManuallyPromote",
               forceRollout="7d9b5c2e-3f1a-4b8e-9c6d-2a1e0f4b5c3d")
    retry = run(edit(obj, new), seen(gen(3, H)), now=now + timedelta(days=1))
    assert retry.statuses()[0]["requestedRolloutHash"] == h(new)
    assert retry.statuses()[0]["conditions"][0] == cond(
        "Applying", "Applying changes for generation 4", now + timedelta(days=1), GEN + 1)


@pytest.mark.parametrize("case", ["forced", "immediate"])
def test_r9_forced_rollouts_never_time_out(case: str) -> None:
    if case == "forced":
        obj, hm = _r9_obj(rolloutStrategy="ManuallyPromote")
        obj["spec"]["forcePromote"] = hm
    else:
        obj, hm = _r9_obj(rolloutStrategy="ImmediatelyPromoteCausingDowntime")
    p = run(obj, seen(gen(3, H), gen(4, hm), **BOTH_READY), now=T0 + timedelta(days=30))
    assert Teardown(4) not in p.steps
    assert p.statuses()[-1]["conditions"][0]["reason"] == "Promoting"


def test_timeout_deadline_for_the_executor() -> None:
    s = spec("2.0.0", rolloutRequestTimeout="1h30m")
    hm = h(s)
    assert timeout_deadline(env(s, applying(3, hm, H)), V2) == T0 + timedelta(minutes=90)
    assert timeout_deadline(env(s, applied(3, H)), V2) is None
    assert timeout_deadline(env(s, v2(3, hm, H, cond("Promoting", "p"))), V2) is None


@pytest.mark.parametrize(("timeout", "elapsed", "cancelled"), [
    (None, timedelta(hours=24), True),
    (None, timedelta(hours=24) - timedelta(milliseconds=1), False),
    ("1h30m", timedelta(minutes=90), True),
    ("1h30m", timedelta(minutes=90) - timedelta(milliseconds=1), False),
    ("250ms", timedelta(milliseconds=250), True),
    ("1d", timedelta(hours=24), True),
])
def test_timeout_boundary(timeout: str | None, elapsed: timedelta, cancelled: bool) -> None:
    extra = {"rolloutRequestTimeout": timeout} if timeout else {}
    s = spec("2.0.0", **extra)
    hm = h(s)
    obj = env(s, applying(3, hm, H))
    p = run(obj, seen(gen(3, H), gen(4, hm), db="Initializing", queue="Initializing"),
            now=T0 + elapsed)
    assert (Teardown(4) in p.steps) is cancelled
    if cancelled:
        assert p.statuses()[0]["conditions"][0]["message"] == (
            f"Cancelled rollout to generation 4 after it exceeded the rollout timeout of "
            f"{timeout or '24h'}")
    else:
        assert p.steps == (Apply(4, failed(obj["status"], 4, T0 + elapsed)), STATELESS,
                           Requeue(5, 10))


def test_an_invalid_stored_timeout_means_24h_with_a_warning() -> None:
    s = spec("2.0.0", rolloutRequestTimeout="-5m")
    hm = h(s)
    obj = env(s, applying(3, hm, H))
    early = run(obj, seen(gen(3, H)), now=T0 + timedelta(hours=23))
    assert early.ending == Requeue(5, 10)
    assert early.warnings and "using 24h" in early.warnings[0]
    late = run(obj, seen(gen(3, H)), now=T0 + timedelta(hours=24))
    assert late.statuses()[0]["conditions"][0]["message"].endswith("rollout timeout of 24h")


def test_r10_immediate_promotion_tears_down_first_and_forces() -> None:
    s = spec("2.0.0", rolloutStrategy="ImmediatelyPromoteCausingDowntime")
    hi = h(s)
    obj = edit(env(spec("1.0.0"), applied(3, H)), s)
    g = GEN + 1
    start = v2(3, hi, H, cond("Applying", "Applying changes for generation 4", LATER, g), gen=g)
    p = run(obj, seen(gen(3, H)), now=LATER)
    assert p.steps == (WriteStatus(start), Teardown(3), Apply(4, failed(start, 4, LATER)),
                       STATELESS, Requeue(5, 10))
    obj = after(obj, p)
    p = run(obj, seen(gen(4, hi), db="Initializing", queue="Initializing"), now=LATER)
    failure = failed(start, 4, LATER)
    promoting = v2(3, hi, H, cond("Promoting", "Attempting to promote generation 4", LATER, g),
                   gen=g)
    assert p.steps == (Teardown(3), Apply(4, failure), SkipCatchup(4, "db", failure),
                       SkipCatchup(4, "queue", failure), WriteStatus(promoting),
                       Promote(4, "db"), STATELESS, Requeue(5, 10))
    obj = after(obj, p)
    done = run(obj, seen(gen(4, hi), **BOTH_LEAD), now=LATER)
    assert done.steps == (Route(4), Teardown(3), WriteStatus(v2(4, hi, hi, cond(
        "Applied", "Successfully applied changes for generation 4", LATER, g), gen=g)),
        STATELESS, Done())


def test_r11_a_reverted_spec_tears_the_candidate_down() -> None:
    pending = applying(3, H2, H)
    obj = edit(env(spec("2.0.0"), pending), spec("1.0.0"))
    g = GEN + 1
    p = run(obj, seen(gen(3, H), gen(4, H2)), now=LATER)
    assert p.steps == (Teardown(4), WriteStatus(v2(3, H, H, cond(
        "Applied", "No changes found from generation 3", LATER, g), gen=g)), STATELESS, Done())


def test_r12_apply_and_skip_catchup_failures_and_the_retry() -> None:
    start = applying(3, H2, H)
    obj = env(spec("2.0.0", rolloutStrategy="ImmediatelyPromoteCausingDowntime"), start)
    obj["status"]["requestedRolloutHash"] = hi = rollout_hash(obj)
    p = run(obj, seen(gen(4, hi), db="Initializing", queue="Initializing"), now=LATER)
    apply_step = next(s for s in p.steps if isinstance(s, Apply))
    skip = next(s for s in p.steps if isinstance(s, SkipCatchup))
    failure = apply_step.failure("image example/db:2.0.0 not found")
    expected = v2(3, hi, H, cond(
        "FailedDeploy",
        "Failed to apply changes for generation 4: image example/db:2.0.0 not found", LATER))
    assert failure == expected  # the hashes are unchanged
    assert skip.failure("still catching up")["conditions"][0]["message"] == (
        "Failed to apply changes for generation 4: failed to skip catchup: still catching up")
    # retried: False → Unknown restarts the clock
    retry = run(env(obj["spec"], failure), seen(gen(3, H)), now=LATER + timedelta(seconds=2))
    assert retry.statuses() == [v2(3, hi, H, cond(
        "Applying", "Applying changes for generation 4", LATER + timedelta(seconds=2)))]
    assert retry.ending == Requeue(5, 10)


def test_r13_a_release_rollback_is_refused_unless_allowed() -> None:
    rest = applied(3, h({"release": "v2026.11.3"}), release="v2026.11.3")
    obj = edit(env({"release": "v2026.11.3"}, rest), {"release": "v2026.10.7"})
    g = GEN + 1
    p = run(obj, seen(gen(3, rest["lastCompletedRolloutHash"])), now=LATER)
    refused = rest | {"observedGeneration": g, "conditions": [cond(
        "FailedDeploy", "Refusing to roll back from v2026.11.3 to v2026.10.7", LATER, g)]}
    assert p.steps == (WriteStatus(refused), ApplyStateless(release="v2026.11.3"), Done())
    allowed = run(obj, seen(), now=LATER, settings=Settings(allow_rollback=True))
    start = rest | {"requestedRolloutHash": h({"release": "v2026.10.7"}), "observedGeneration": g,
                    "conditions": [cond("Applying", "Applying changes for generation 4", LATER,
                                        g)]}
    assert allowed.steps == (WriteStatus(start), Apply(4, failed(start, 4, LATER)),
                             ApplyStateless(release="v2026.11.3"), Requeue(5, 10))


@pytest.mark.parametrize(("new", "old", "rollback"), [
    ("v2026.10.7", "v2026.11.3", True),
    ("v2026.11.3", "v2026.11.3", False),
    ("v2026.11.4", "v2026.11.3", False),
    ("2026.9.1", "v2026.10.0", True),      # the `v` is optional
    ("v2026.11.3-rc1", "v2026.11.3", True),  # a suffix sorts before the bare tuple
    ("v2026.11.3", "v2026.11.3-rc1", False),
    ("v2026.11", "v2026.11.0", True),
    ("latest", "v2026.11.3", False),       # unparsable: no check
    ("v2026.10.7", "nightly", False),
])
def test_release_ordering(new: str, old: str, rollback: bool) -> None:
    assert is_rollback(new, old) is rollback


def test_release_key_is_numeric() -> None:
    assert release_key("v2026.10.7") == ((2026, 10, 7), 1, "")
    assert release_key("v10.0") > release_key("v9.9")  # type: ignore[operator]
    assert release_key("v1..2") is None


def test_r14_v1alpha1_changed_without_request_waits_for_approval() -> None:
    rest = v1(3, R1, H, cond("Applied", "Successfully applied changes for generation 3"))
    obj = edit(env(spec("1.0.0", requestRollout=R1), rest, api=V1ALPHA1),
               spec("2.0.0", requestRollout=R1))
    g = GEN + 1
    p = run(obj, seen(gen(3, H), gen(4, H2)), now=LATER, settings=V1)
    waiting = v1(3, R1, H, cond("WaitingForApproval",
                                "Changes detected, waiting for approval for generation 4",
                                LATER, g), gen=g)
    assert p.steps == (Teardown(4), WriteStatus(waiting), STATELESS, Done())


def test_r15_v1alpha1_request_without_changes_is_recorded() -> None:
    rest = v1(3, R1, H, cond("Applied", "Successfully applied changes for generation 3"))
    obj = edit(env(spec("1.0.0", requestRollout=R1), rest, api=V1ALPHA1),
               spec("1.0.0", requestRollout=R2))
    g = GEN + 1
    p = run(obj, seen(gen(3, H)), now=LATER, settings=V1)
    assert p.steps == (WriteStatus(v1(3, R2, H, cond(
        "Applied", "No changes found from generation 3", T0, g), gen=g)), STATELESS, Done())


def test_r15_v1alpha1_parked_then_forced_with_the_request() -> None:
    s = spec("2.0.0", requestRollout=R2, rolloutStrategy="ManuallyPromote")
    hm = h(s, api=V1ALPHA1)
    parked = v1(3, R1, hm, cond("ReadyToPromote", "Ready to promote generation 4"))
    obj = env(s, parked, api=V1ALPHA1)
    observed = seen(gen(3, H), gen(4, hm, request=R2), **BOTH_READY)
    assert run(obj, observed, now=LATER, settings=V1).steps == (
        Apply(4, failed(parked, 4, LATER)), STATELESS, Done())  # stays parked

    obj = edit(obj, s | {"forcePromote": R2})
    g = GEN + 1
    p = run(obj, observed, now=LATER, settings=V1)
    failure = failed(parked | {"observedGeneration": g}, 4, LATER)
    failure["conditions"][0]["observedGeneration"] = g
    promoting = v1(3, R1, hm, cond("Promoting", "Attempting to promote generation 4", T0, g),
                   gen=g)
    assert p.steps == (Apply(4, failure), SkipCatchup(4, "db", failure),
                       SkipCatchup(4, "queue", failure), WriteStatus(promoting),
                       Promote(4, "db"), STATELESS, Requeue(5, 10))
    done = run(after(obj, p), seen(gen(3, H), gen(4, hm, request=R2), **BOTH_LEAD),
               now=LATER, settings=V1)
    assert done.steps == (Route(4), Teardown(3), WriteStatus(v1(4, R2, hm, cond(
        "Applied", "Successfully applied changes for generation 4", LATER, g), gen=g)),
        STATELESS, Done())


def test_r16_both_release_and_components_is_reported_not_rolled_out() -> None:
    rest = applied(3, H)
    obj = edit(env(spec("1.0.0"), rest), spec("1.0.0", release="v2026.11.3"))
    p = run(obj, seen(gen(3, H), gen(4, H2)), now=LATER)
    assert len(p.steps) == 2 and p.ending == Done()  # no Teardown, no ApplyStateless
    (status,) = p.statuses()
    c = status["conditions"][0]
    assert (c["reason"], c["status"]) == ("FailedDeploy", "False")
    assert c["message"].startswith("Invalid spec: spec: exactly one of release and components")
    assert status["activeGeneration"] == 3  # generation 3 keeps serving
    assert run(after(obj, p), seen(gen(3, H)), now=LATER).steps == (Done(),)  # said once


# --- the controller side of the conversion rows ------------------------------------------------


def v1obj(spec_: dict[str, Any], status: dict[str, Any] | None) -> dict[str, Any]:
    return env(spec_, status, api=V1ALPHA1)


def test_x2_v1alpha1_at_rest_stays_at_rest() -> None:
    obj = up(v1obj(spec("1.0.0", requestRollout=R1), v1(3, R1, H, cond(
        "Applied", "Successfully applied changes for generation 3"))))
    assert (obj["status"]["lastCompletedRolloutHash"], obj["status"]["requestedRolloutHash"]) \
        == (H, H)
    assert run(obj, seen(gen(3, H))).steps == (STATELESS, Done())


@pytest.mark.parametrize("recorded", ["same", "other"])
def test_x3_v1alpha1_mid_rollout_continues_or_restarts(recorded: str) -> None:
    obj = up(v1obj(spec("2.0.0", requestRollout=R2),
                   v1(3, R1, "", cond("Applying", "Applying changes for generation 4"))))
    p = run(obj, seen(gen(3, H), gen(4, H2 if recorded == "same" else H3), db="Initializing",
                      queue="Initializing"), now=LATER)
    if recorded == "same":
        assert p.steps == (Apply(4, failed(obj["status"], 4, LATER)), STATELESS, Requeue(5, 10))
    else:
        assert p.steps[0] == Teardown(4) and p.ending == Requeue(0, 0)
        assert p.statuses()[0]["conditions"][0]["lastTransitionTime"] == rfc3339(LATER)


@pytest.mark.parametrize("recorded", ["current", "older"])
def test_x4_v1alpha1_promoting_finishes_with_the_recorded_hash(recorded: str) -> None:
    obj = up(v1obj(spec("2.0.0", requestRollout=R2),
                   v1(3, R1, H2, cond("Promoting", "Attempting to promote generation 4"))))
    assert obj["status"]["lastCompletedRolloutHash"] is None
    rec = H2 if recorded == "current" else H
    p = run(obj, seen(gen(3, H), gen(4, rec), **BOTH_LEAD), now=LATER)
    (status,) = p.statuses()
    assert status["lastCompletedRolloutHash"] == status["requestedRolloutHash"] == rec
    assert status["activeGeneration"] == 4
    assert p.ending == (Done() if recorded == "current" else Requeue(0, 0))
    if recorded == "older":  # exactly one more rollout
        assert run(after(obj, p), seen(gen(4, rec)), now=LATER).statuses()[0][
            "conditions"][0]["message"] == "Applying changes for generation 5"


def test_x5_waiting_for_approval_rolls_out_and_no_status_is_initialised() -> None:
    h1 = H
    obj = up(v1obj(spec("2.0.0", requestRollout=R1), v1(3, R1, h1, cond(
        "WaitingForApproval", "Changes detected, waiting for approval for generation 4"))))
    p = run(obj, seen(gen(3, H)), now=LATER)
    assert p.statuses()[0]["requestedRolloutHash"] == H2
    assert isinstance(p.steps[1], Apply)
    bare = up(v1obj(spec("2.0.0", requestRollout=R1), None))
    assert run(bare).steps == (WriteStatus(v2(0, None, None)), STATELESS, Requeue(0, 0))


def test_x9_a_v1alpha1_client_forcing_with_its_request_promotes() -> None:
    obj, hm = _parked()
    old = down(obj)
    old["spec"]["forcePromote"] = old["spec"]["requestRollout"]
    back = up(old)
    assert back["spec"]["forcePromote"] == uuid5_of(hm)
    p = run(back, seen(gen(3, H), gen(4, hm), **BOTH_READY), now=LATER)
    assert [type(s) for s in p.steps[1:4]] == [SkipCatchup, SkipCatchup, WriteStatus]
    assert p.statuses()[0]["conditions"][0]["reason"] == "Promoting"


def test_x10_a_cancelled_v1alpha1_rollout_stays_cancelled() -> None:
    obj = up(v1obj(spec("2.0.0", requestRollout=R2), v1(3, R2, "", cond(
        "RolloutTimeout",
        "Cancelled rollout to generation 4 after it exceeded the rollout timeout of 24h"))))
    assert (obj["status"]["lastCompletedRolloutHash"], obj["status"]["requestedRolloutHash"]) \
        == (None, H2)
    assert run(obj, seen(gen(3, H)), now=LATER).steps == (STATELESS, Done())


# --- predicates, D0–D4 -------------------------------------------------------------------------

F = False
T = True


@pytest.mark.parametrize(("mode", "spec_extra", "status", "generations", "expected"), [
    # v1alpha2: at rest
    ("v2", {}, applied(3, H), (), Predicates(F, F, F, F, F, F, F)),
    # changed = requested; a pending candidate for another hash supersedes
    ("v2", {}, applied(3, H2), (gen(4, H2),), Predicates(F, T, T, F, F, F, T)),
    # in progress for another hash supersedes even without a candidate
    ("v2", {}, applying(3, H2, H3), (), Predicates(F, T, T, T, F, F, T)),
    ("v2", {}, v2(3, H, H3, cond("ReadyToPromote", "r")), (gen(4, H),),
     Predicates(F, T, T, T, F, T, F)),
    ("v2", {"forcePromote": H}, applying(3, H, None), (), Predicates(F, T, T, T, T, F, F)),
    ("v2", {"forcePromote": uuid5_of(H)}, applying(3, H, None), (),
     Predicates(F, T, T, T, T, F, F)),
    ("v2", {"forcePromote": H}, v2(3, None, None, cond("Applying", "a")), (),
     Predicates(F, T, T, T, F, F, T)),  # no requested hash: nothing to force
    ("v2", {"rolloutStrategy": "ImmediatelyPromoteCausingDowntime"}, applied(3, H), (),
     Predicates(F, T, T, F, T, F, F)),
    ("v2", {}, v2(3, H, None, cond("Promoting", "p")), (), Predicates(T, T, T, T, F, F, F)),
    # v1alpha1
    ("v1", {"requestRollout": R1}, v1(3, R1, H, cond("Applied", "a")), (),
     Predicates(F, F, F, F, F, F, F)),
    ("v1", {"requestRollout": R2}, v1(3, R1, H, cond("Applied", "a")), (),
     Predicates(F, F, T, F, F, F, F)),
    ("v1", {"requestRollout": R1}, v1(3, R1, H2, cond("Applied", "a")), (gen(4, H2),),
     Predicates(F, T, F, F, F, F, T)),
    # parked: resourcesHash = H, yet the rollout is pending
    ("v1", {"requestRollout": R2}, v1(3, R1, H, cond("ReadyToPromote", "r")), (gen(4, H),),
     Predicates(F, T, T, T, F, T, F)),
    ("v1", {"requestRollout": R2, "forcePromote": R2}, v1(3, R1, "", cond("Applying", "a")),
     (), Predicates(F, T, T, T, T, F, F)),
    ("v1", {"requestRollout": R2, "forcePromote": H}, v1(3, R1, "", cond("Applying", "a")),
     (), Predicates(F, T, T, T, T, F, F)),
    ("v1", {"requestRollout": R2, "forcePromote": R1}, v1(3, R1, "", cond("Applying", "a")),
     (), Predicates(F, T, T, T, F, F, F)),
])
def test_predicates(mode: str, spec_extra: dict[str, Any], status: dict[str, Any],
                    generations: tuple[Generation, ...], expected: Predicates) -> None:
    s = spec("1.0.0", **spec_extra)
    obj = env(s, status, api=V1ALPHA1 if mode == "v1" else V1ALPHA2)
    assert predicates(obj, seen(*generations), V1 if mode == "v1" else V2,
                      rollout_hash(obj)) == expected


def test_d0_initial_status_seeded_from_the_annotation() -> None:
    seeded = env(spec(), annotations={"lockstep.dev/last-known-active-generation": "12"})
    assert run(seeded).steps == (WriteStatus(v2(12, None, None)), STATELESS, Requeue(0, 0))
    v1_seeded = env(spec(requestRollout=R1), api=V1ALPHA1)
    assert run(v1_seeded, settings=V1).steps == (
        WriteStatus(v1(0, NIL_UUID, "")), STATELESS, Requeue(0, 0))
    invalid = env({"release": "v1", "components": {}})
    assert run(invalid).steps == (WriteStatus(v2(0, None, None)), Requeue(0, 0))


@pytest.mark.parametrize("request_rollout", [None, "", NIL_UUID, "absent"])
def test_d0_v1alpha1_nil_request_is_replaced_first(request_rollout: str | None) -> None:
    s = spec() if request_rollout == "absent" else spec(requestRollout=request_rollout)
    fresh = str(uuid.UUID(int=0x1234, version=4))
    for status in (None, v1(3, R1, H, cond("Applied", "a"))):
        obj = env(s, status, api=V1ALPHA1)
        assert run(obj, seen(fresh=fresh), settings=V1).steps == (
            WriteSpec({"requestRollout": fresh}), Done())
        assert run(obj, settings=V1).ending == Fail(
            "no fresh UUID was observed for the nil requestRollout")


def test_d1_promoting_without_its_candidate_or_leaders_waits() -> None:
    promoting = v2(3, H2, H, cond("Promoting", "Attempting to promote generation 4"))
    for observed in (seen(gen(3, H)), seen(gen(3, H), gen(4, H2))):
        assert run(env(spec("2.0.0"), promoting), observed).steps == (STATELESS, Requeue(5, 10))


def test_d1b_invalid_spec_variants() -> None:
    for bad in ({}, {"components": {"Bad_Name": {"image": "x"}}},
                {"release": "v1", "rolloutStrategy": "Sometimes"},
                {"release": "v1", "forceRollout": "not-a-uuid"}):
        p = run(env(bad, applied(3, H)), seen(gen(3, H)), now=LATER)
        assert p.steps[-1] == Done() and len(p.steps) == 2
        assert p.statuses()[0]["conditions"][0]["message"].startswith("Invalid spec: ")
    wrong_mode = run(env(spec(requestRollout=R1), applied(3, H)), seen(gen(3, H)), settings=V1)
    assert "v1alpha1 mode" in wrong_mode.statuses()[0]["conditions"][0]["message"]


def test_d3_keeps_a_cancelled_status() -> None:
    cancelled = v1(3, R2, "", cond("RolloutTimeout", "Cancelled …"))
    obj = env(spec("2.0.0", requestRollout=R2), cancelled, api=V1ALPHA1)
    assert run(obj, seen(gen(3, H), gen(4, H2)), settings=V1).steps == (
        Teardown(4), STATELESS, Done())


def test_d4_rewrites_only_when_needed() -> None:
    rest = applied(3, H)
    assert run(env(spec(), rest), seen(gen(3, H))).steps == (STATELESS, Done())
    # a FailedDeploy (e.g. refused rollback) reverted: Applied "No changes"
    failed_status = rest | {"conditions": [cond("FailedDeploy", "Refusing …")]}
    p = run(env(spec(), failed_status), seen(gen(3, H)), now=LATER)
    assert p.statuses() == [v2(3, H, H, cond("Applied", "No changes found from generation 3",
                                              LATER))]
    # no condition at all
    bare = rest | {"conditions": []}
    assert run(env(spec(), bare), seen(gen(3, H)), now=LATER).statuses()[0]["conditions"] == [
        cond("Applied", "No changes found from generation 3", LATER)]


def test_status_writes_are_skipped_when_only_times_differ() -> None:
    # the stored Applying equals what D2e would write: no write, whatever the time
    obj = env(spec("2.0.0"), applying(3, H2, H))
    p = run(obj, seen(gen(3, H)), now=LATER)
    assert p.statuses() == []
    # an Applied at rest re-read hours later: nothing written
    assert run(env(spec(), applied(3, H)), seen(gen(3, H)),
               now=T0 + timedelta(hours=5)).statuses() == []


def test_readiness_needs_ready_workloads_and_reachable_leaders() -> None:
    obj = env(spec("2.0.0"), applying(3, H2, H))
    for observed in (seen(gen(3, H), gen(4, H2, ready=False), **BOTH_READY),
                     seen(gen(3, H), gen(4, H2), db="unreachable", queue="ReadyToPromote"),
                     seen(gen(3, H), gen(4, H2), db="Initializing", queue="IsLeader"),
                     seen(gen(3, H), gen(4, H2), queue="ReadyToPromote"),  # db not reported
                     seen(gen(3, H), gen(4, H2))):
        assert run(obj, observed).ending == Requeue(5, 10)
        assert not [s for s in run(obj, observed).steps if isinstance(s, WriteStatus | Promote)]
    forced = env(spec("2.0.0", rolloutStrategy="ImmediatelyPromoteCausingDowntime"),
                 applying(3, H2, H))
    unreachable = seen(gen(4, rollout_hash(forced)), db="unreachable", queue="Initializing")
    assert not [s for s in run(forced, unreachable).steps if isinstance(s, SkipCatchup)]


def test_lasttransitiontime_formats() -> None:
    assert rfc3339(T0) == "2026-11-03T12:00:00Z"
    assert rfc3339(T0 + timedelta(microseconds=1500)) == "2026-11-03T12:00:00.001500Z"
    assert rfc3339(datetime(2026, 1, 1, 13, tzinfo=dt.timezone(timedelta(hours=1)))) \
        == "2026-01-01T12:00:00Z"


def test_a_garbled_lasttransitiontime_is_replaced_not_trusted() -> None:
    status = applying(3, H2, H)
    status["conditions"][0]["lastTransitionTime"] = "yesterday"
    p = run(env(spec("2.0.0"), status), seen(gen(3, H)), now=T0 + timedelta(days=9))
    assert p.statuses()[0]["conditions"][0]["lastTransitionTime"] == rfc3339(
        T0 + timedelta(days=9))
    assert Teardown(4) not in p.steps


# --- bad resources never raise -----------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers(-3, 10) | st.text(max_size=8) \
    | st.sampled_from([H, H2, R1, NIL_UUID, "", "24h", "1h30m", "-1s", "v2026.11.3",
                       "2026-11-03T12:00:00Z", "Unknown", "Promoting", "Applied",
                       "ReadyToPromote", "RolloutTimeout", "ManuallyPromote",
                       "ImmediatelyPromoteCausingDowntime", "example/db:1.0.0"])
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)


def _member(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))


_component = _json | _member(["image", "args", "env", "stateless"], _json)
_spec = _json | _member(["release", "components", "rolloutStrategy", "rolloutRequestTimeout",
                         "forceRollout", "forcePromote", "requestRollout"],
                        _json | st.dictionaries(st.sampled_from(["db", "web", "X"]), _component))
_condition = _json | _member(["type", "status", "reason", "message", "lastTransitionTime",
                              "observedGeneration"], _json | st.just("UpToDate"))
_status = _json | _member(["activeGeneration", "requestedRolloutHash",
                           "lastCompletedRolloutHash", "lastCompletedRelease", "resourcesHash",
                           "lastCompletedRolloutRequest", "observedGeneration", "conditions"],
                          _json | st.lists(_condition, max_size=2))
_object = _member(["apiVersion", "kind", "metadata", "spec", "status"],
                  st.sampled_from([V1ALPHA1, V1ALPHA2, "Environment"]) | _json
                  | _member(["name", "generation", "annotations"], _json) | _spec | _status)
_observed = st.builds(
    Observed,
    generations=st.lists(st.builds(Generation, st.integers(0, 5),
                                   st.sampled_from([H, H2, None, "x"]),
                                   st.none() | st.text(max_size=4),
                                   st.none() | st.sampled_from([R1, R2]), st.booleans()),
                         max_size=3).map(tuple),
    leaders=st.dictionaries(st.sampled_from(["db", "queue"]),
                            st.sampled_from(["Initializing", "ReadyToPromote", "Promoting",
                                             "IsLeader", "unreachable"])),
    fresh_uuid=st.none() | st.just(R2))


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=_object | _json, observed=_observed,
       now=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                        timezones=st.just(UTC)),
       settings=st.builds(Settings, st.sampled_from(["v1alpha2", "v1alpha1"]), st.booleans()))
def test_any_object_gets_a_plan_and_never_an_exception(obj: Any, observed: Observed,
                                                       now: datetime,
                                                       settings: Settings) -> None:
    before = copy.deepcopy(obj)
    plan = reconcile(obj, observed, now, settings)
    assert isinstance(plan, Plan)
    ending = plan.ending
    assert not (isinstance(ending, Fail) and "internal error" in ending.error), ending
    assert obj == before  # the object given is not changed


_valid_specs = [spec("1.0.0"), spec("2.0.0", rolloutStrategy="ManuallyPromote"),
                spec("2.0.0", rolloutStrategy="ImmediatelyPromoteCausingDowntime",
                     forcePromote=H2),
                spec("3.0.0", rolloutRequestTimeout="1s", forcePromote=uuid5_of(H3)),
                {"release": "v2026.10.7"}, {"release": "v2026.11.3", "rolloutRequestTimeout": "x"}]


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_=st.sampled_from(_valid_specs), request=st.sampled_from([R1, R2]),
       status=_status, observed=_observed,
       now=st.sampled_from([T0, LATER, T0 + timedelta(days=2)]),
       settings=st.builds(Settings, st.sampled_from(["v1alpha2", "v1alpha1"]), st.booleans()))
def test_a_valid_spec_with_any_status_gets_a_plan(spec_: dict[str, Any], request: str,
                                                  status: Any, observed: Observed,
                                                  now: datetime, settings: Settings) -> None:
    """D1–D4 on garbled statuses: a plan every time, and a FailedDeploy only as the spec says."""
    v1mode = settings.api == "v1alpha1"
    obj = env(spec_ | ({"requestRollout": request} if v1mode else {}), status,
              api=V1ALPHA1 if v1mode else V1ALPHA2)
    plan = reconcile(obj, observed, now, settings)
    assert not isinstance(plan.ending, Fail), plan.ending
    for written in plan.statuses():
        assert len(written["conditions"]) <= 1  # none only in D0's initial status
        for c in written["conditions"]:
            assert c["reason"] != "FailedDeploy" \
                or c["message"].startswith("Refusing to roll back")
        assert written["observedGeneration"] == GEN


# --- purity ------------------------------------------------------------------------------------

def _purity_cases() -> list[tuple[dict[str, Any], Observed, Settings]]:
    parked, hm = _parked()
    promoting = env(spec("2.0.0"), v2(3, H2, H, cond("Promoting", "p")))
    return [
        (env(spec()), Observed(), V2),
        (env(spec("2.0.0"), applied(3, H)), seen(gen(3, H)), V2),
        (parked, seen(gen(4, hm), **BOTH_READY), V2),
        (edit(parked, parked["spec"] | {"forcePromote": hm}), seen(gen(4, hm), **BOTH_READY), V2),
        (promoting, seen(gen(4, H2), **BOTH_LEAD), V2),
        (env(spec("2.0.0"), applying(3, H2, H)), seen(gen(4, H3)), V2),
        (env({"release": "v2026.10.7"}, applied(3, H, release="v2026.11.3")), seen(), V2),
        (env({"release": "v1", "components": {}}, applied(3, H)), seen(), V2),
        (env(spec(requestRollout=R2), v1(3, R1, H, cond("Applied", "a")), api=V1ALPHA1),
         seen(), V1),
        (env(spec(), None, api=V1ALPHA1), seen(fresh=R1), V1),
    ]


@pytest.mark.parametrize("case", range(len(_purity_cases())))
def test_reconcile_is_pure(case: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """reconcile depends on its arguments only: no clock, randomness, file, socket or process;
    it changes nothing it was given and keeps no state between calls."""
    obj, observed, settings = _purity_cases()[case]
    expected = reconcile(copy.deepcopy(obj), observed, LATER, settings)  # imports warmed up
    snapshot = copy.deepcopy(obj)
    with outside_world_closed(monkeypatch, also=[(reconcile_module, "datetime")]):
        first = reconcile(obj, observed, LATER, settings)
        again = reconcile(obj, observed, LATER, settings)
    assert first == again == expected
    assert not (isinstance(first.ending, Fail) and "internal error" in first.ending.error)
    assert obj == snapshot


def test_the_purity_harness_catches_the_outside_world(monkeypatch: pytest.MonkeyPatch) -> None:
    with outside_world_closed(monkeypatch, also=[(reconcile_module, "datetime")]):
        for touch in (time.time, lambda: dt.datetime.now(), random.random, uuid.uuid4,
                      lambda: open(__file__),  # noqa: SIM115
                      lambda: socket.create_connection(("x", 1)),
                      lambda: subprocess.run(["true"], check=False)):
            with pytest.raises(RuntimeError):
                touch()

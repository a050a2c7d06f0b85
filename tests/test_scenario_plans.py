"""Seeded plans (spec §7): F10, F12 golden plans, F22, the invariants for seeds 0…999 and for
arbitrary release lists, the plan's text and inputs, and replay from plan.json."""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockstep.config import DEFAULT_TAG_FORMAT
from lockstep.errors import UsageError
from lockstep.scenarios import (
    SCENARIOS,
    Initialize,
    Kill,
    Manipulate,
    PlanError,
    PlanOptions,
    Promote,
    Releases,
    ScenarioSettings,
    Shard,
    Start,
    Validate,
    WaitReady,
    build_plan,
    check_plan,
    planner,
    read_replay,
    scenario_class,
)
from lockstep.scenarios.actions import Action, render_value
from lockstep.scenarios.plan import inputs_digest, replay_releases_args
from tests.scenario_fixture import (
    CHECKS,
    F22_SEED,
    F22_SETTINGS,
    MANIFEST_SHA256,
    golden_cases,
    golden_mismatch,
    plan,
    releases,
    scenario,
)

CASES = golden_cases()


@pytest.mark.parametrize("stem", sorted(CASES))
def test_f12_golden_plans(stem: str) -> None:
    assert golden_mismatch(stem, CASES[stem]) is None


def _one_draw(r: random.Random, hops: int) -> tuple[int, int]:
    """A planner edit: both manipulate phases at one drawn slot."""
    q = r.randint(0, 2 * hops)
    return q, q


EDITS = {"positions": ("draw_positions", _one_draw),
         "instances": ("instance_of", lambda hop: "a" if hop % 2 == 0 else "c")}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_f12_a_planner_edit_breaks_the_golden_comparison(
        edit: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from lockstep.scenarios import builtin

    name, replacement = EDITS[edit]
    for module in (planner, builtin):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, replacement)
    mutated = plan("random-upgrade-path", 12345)
    check_plan([e.action for e in mutated.entries], releases().key)  # still a valid plan
    assert golden_mismatch("random-upgrade-path-12345", mutated) == (
        "random-upgrade-path-12345.txt differs from the rendered plan")


def test_f10_seeds_replay_and_differ() -> None:
    again = plan("random-upgrade-path", 12345)
    assert again.text() == CASES["random-upgrade-path-12345"].text()
    assert again.json_text() == CASES["random-upgrade-path-12345"].json_text()
    one, two = CASES["random-upgrade-path-1"], CASES["random-upgrade-path-2"]
    assert one.action_lines() != two.action_lines()
    assert one.digest == two.digest  # same inputs: only the seed differs


def test_f22_long_hops_get_dropped_candidates_back() -> None:
    fixture = releases(F22_SETTINGS)
    kept = planner.draw_series(fixture, random.Random(F22_SEED))
    assert kept == [(2026, 3)] and fixture.span((2026, 3), fixture.target.series) == 8
    s = scenario("random-upgrade-path", F22_SEED, settings=F22_SETTINGS)
    versions = s.path.versions  # type: ignore[attr-defined]
    # 2026.05 has no complete release, so from .03 the newest reachable is .04, not .05
    assert [v[:8] for v in versions] == ["v2026.03", "v2026.04", "v2026.06", "v2026.08",
                                         "v2026.10"]
    series = [fixture.format.version(v, "v").series for v in versions] + [fixture.target.series]
    assert all(fixture.span(a, b) <= 2 for a, b in itertools.pairwise(series))
    tight = F22_SETTINGS.model_copy(update={"max_hop_series": 1})
    with pytest.raises(UsageError, match="no upgrade path within max_hop_series"):
        scenario("random-upgrade-path", F22_SEED, settings=tight)


def test_invariants_hold_for_every_builtin_and_seeds_0_to_999() -> None:
    fixture = releases()
    random_path = scenario_class("random-upgrade-path")
    differ = set()
    for seed in range(1000):
        s = random_path(CHECKS, None, seed, releases=fixture, settings=fixture.settings)
        check_plan([e.action for e in s.plan], fixture.key)
        differ.add(tuple(e.action.line() for e in s.plan))
        hops = s.path.hops  # type: ignore[attr-defined]
        assert 1 <= hops <= fixture.settings.random_max_hops
    assert len(differ) > 500  # the seed matters
    for name in SCENARIOS:
        if name != "random-upgrade-path":
            build_plan(scenario(name), MANIFEST_SHA256)  # checks the invariants


BROKEN: dict[str, tuple[list[Action], str]] = {
    "phase twice": ([Start(), Initialize(), Initialize()], "Initialize must come before"),
    "M2 before M1": ([Start(), Initialize(), Manipulate(phase=2)], "out of order"),
    "V before M2": ([Start(), Initialize(), Manipulate(phase=1), Validate()],
                    "Validate comes before"),
    "one V": ([Start(), Initialize(), Manipulate(phase=1), Manipulate(phase=2), Validate()],
              "V appears 1 times"),
    "no M2": ([Start(), Initialize(), Manipulate(phase=1)], "M2 appears 0 times"),
    "downgrade": ([Start(version="v2026.10.1"), Kill(), Start(version="v2026.09.1")],
                  "goes back from v2026.10.1 to v2026.09.1"),
    "downgrade from T": ([Start(), Kill(), Start(version="v2026.09.1")], "from T"),
    "ro generation": ([Start(instance="a", deploy_generation=2),
                       Start(instance="b", deploy_generation=2, read_only=True)],
                      "generation 2 is not higher than the leader's 2"),
    "wrong fence": ([Start(instance="a"), Start(instance="b", deploy_generation=1,
                                                read_only=True),
                     WaitReady(instance="b"), Promote(instance="b", fences="c")],
                    "fences c, but the current leader is a"),
    "start running": ([Start(instance="a"), Start(instance="a")], "still run"),
    "promote unstarted": ([Start(instance="a"), Promote(instance="b", fences="a")],
                          "b is promoted but does not run"),
    "phase off leader": ([Start(instance="a"), Start(instance="b", deploy_generation=1,
                                                     read_only=True),
                          Initialize(instance="b")], "runs on b, but the current leader is a"),
    "phase after kill": ([Start(), Kill(), Initialize()], "current leader is none"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_invariant_is_enforced(case: str) -> None:
    actions, message = BROKEN[case]
    with pytest.raises(PlanError, match=re.escape(message)) as info:
        check_plan(actions, releases().key)
    assert info.value.exit_code == 2
    assert info.value.one_line().startswith("PlanError: plan invariant broken")


def test_a_plan_started_outside_runs_against_main() -> None:
    check_plan([Initialize(), Manipulate(phase=1), Manipulate(phase=2), Validate(), Validate()],
               releases().key)


def test_plan_text_format() -> None:
    text = CASES["rollback-refused"].text()
    lines = text.split("\n")
    assert lines[-1] == "" and all(line == line.rstrip() for line in lines)
    keys = [line.split(" = ")[0] for line in lines[:8]]
    assert keys == ["scenario", "seed", "inputs", "base", "target", "checks", "disabled",
                    "skipped"]
    assert lines[4] == f"target = v2026.11.2 ({MANIFEST_SHA256[:12]})"
    assert re.fullmatch(r"inputs = [0-9a-f]{12}", lines[2])
    assert all(re.fullmatch(r"[0-9]{3} [A-Za-z]+( [a-z_]+=\S+)*(  # inserted)?", line)
               for line in lines[8:-1])
    data = json.loads(CASES["rollback-refused"].json_text())
    assert [a["line"] for a in data["actions"]] == lines[8:-1]
    assert data["actions"][9]["expect_refusal"] == "refused" and data["actions"][9]["inserted"] \
        is False
    assert data["inputs"]["digest"] == lines[2][-12:]


def test_value_rendering() -> None:
    assert render_value(None, version=True) == "T"
    assert render_value(True) == "true" and render_value(False) == "false"
    assert render_value(300) == "300" and render_value(2.0) == "2"
    assert render_value("v2026.10.1") == "v2026.10.1"
    assert render_value("two words") == '"two words"'
    assert render_value({"b": "2", "a": "x y"}) == '{"a":"x y","b":"2"}'
    start = Start(instance="a", env={"Z": "1", "A": "two words"}, timeout=30,
                  deploy_generation=0)
    assert start.line() == 'Start instance=a env={"A":"two words","Z":"1"} timeout=30'
    assert Kill(capture_logs=False).line() == "Kill capture_logs=false"
    assert Manipulate(instance="b", phase=2).line() == "Manipulate instance=b phase=2"
    assert WaitReady(instance="b").kebab_name == "wait-ready"


def test_inputs_lines_and_digest() -> None:
    opts = PlanOptions(from_version="v2026.07.1", checks=("KeyValue", "Counter"),
                       shard=Shard(0, 1), mode="together", config="default")
    p = plan("zero-downtime-upgrade", options=opts)
    lines = list(p.inputs)
    assert lines[0] == "target v2026.11.2"
    tag_lines = [line for line in lines if line.startswith("tag ")]
    assert tag_lines[0] == "tag v2025.11.1 ok" and "tag v2026.05.1 missing" in tag_lines
    assert not any("v2026.09.3" in line or "rc" in line for line in tag_lines)
    config = [line for line in lines if line.startswith("config ")]
    assert config == sorted(config) and len(config) == 10
    assert "config max_hop_series=null" in config and 'config random_patch="random"' in config
    assert [line for line in lines if line.startswith("check ")] == [
        "check Counter", "check Flaky", "check KeyValue", "check SchemaMigration"]
    assert lines[-5:] == ["option --from=v2026.07.1", "option --check=Counter,KeyValue",
                          "option --shard=0/1", "option --mode=together",
                          "option --config=default"]
    assert p.digest == inputs_digest(lines) == p.header_lines()[2][-12:]
    other = plan("zero-downtime-upgrade", settings=ScenarioSettings(random_max_hops=3,
                                                                    skip_versions=()))
    assert other.digest != plan("zero-downtime-upgrade").digest


def test_replay_from_plan_json_ignores_todays_tags() -> None:
    original = plan("random-upgrade-path", 1, options=PlanOptions(checks=("Counter",)))
    replay = read_replay(json.loads(original.json_text()))
    assert replay.seed == 1 and replay.options.checks == ("Counter",)
    rebuilt_releases = Releases(**replay_releases_args(replay, DEFAULT_TAG_FORMAT))
    rebuilt = scenario_class(replay.scenario)(CHECKS, None, replay.seed,
                                              releases=rebuilt_releases,
                                              options=replay.options, settings=replay.settings)
    assert build_plan(rebuilt, replay.manifest_sha256).text() == original.text()
    tampered = json.loads(original.json_text())
    tampered["inputs"]["lines"][1] = "tag v2025.11.1 missing"
    with pytest.raises(UsageError, match="do not match their digest"):
        read_replay(tampered)
    with pytest.raises(UsageError, match=r"not a scenario plan\.json"):
        read_replay({"inputs": []})


TAG = st.tuples(st.integers(2024, 2026), st.integers(1, 12), st.integers(1, 4))


@settings(max_examples=60, deadline=None)
@given(tags=st.sets(TAG, min_size=1, max_size=25), missing=st.sets(TAG, max_size=8),
       seed=st.integers(0, 2**63 - 1), keep=st.floats(0, 1), hops=st.integers(1, 6),
       max_hop=st.one_of(st.none(), st.integers(1, 4)), patch=st.sampled_from(["random",
                                                                               "latest"]))
def test_random_paths_are_valid_for_any_release_list(
        tags: set[tuple[int, int, int]], missing: set[tuple[int, int, int]], seed: int,
        keep: float, hops: int, max_hop: int | None, patch: str) -> None:
    names = [f"v{y}.{m:02d}.{n}" for y, m, n in sorted(tags)]
    gone = {f"v{y}.{m:02d}.{n}" for y, m, n in missing}
    cfg = ScenarioSettings(random_keep_probability=keep, random_max_hops=hops,
                           max_hop_series=max_hop, random_patch=patch)  # type: ignore[arg-type]
    rel = Releases(names, tag_format=DEFAULT_TAG_FORMAT, target_version="v2027.01.1",
                   has_artifacts=lambda t: t not in gone, settings=cfg)
    cls = scenario_class("random-upgrade-path")
    try:
        first = cls(CHECKS, None, seed, releases=rel, settings=cfg)
    except UsageError as exc:
        assert re.match("not enough releases|no upgrade path within max_hop_series",
                        exc.message)
        return
    actions = [e.action for e in first.plan]
    check_plan(actions, rel.key)
    versions = first.path.versions  # type: ignore[attr-defined]
    assert all(rel.artifacts[v] for v in versions)  # every chosen tag has its artifacts
    series = [rel.format.version(v, "v").series for v in versions] + [rel.target.series]
    assert series == sorted(set(series))  # one tag per series, ascending
    if max_hop is not None:
        assert all(rel.span(a, b) <= max_hop for a, b in itertools.pairwise(series))
    second = cls(CHECKS, None, seed, releases=rel, settings=cfg)
    assert [e.action for e in second.plan] == actions  # the seed replays

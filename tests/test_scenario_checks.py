"""The check contract (spec §2) and selection (§4 step 3, §9 sharding): F1, F17, rngs."""

from __future__ import annotations

import random

import pytest

from lockstep.errors import UsageError
from lockstep.scenarios import (
    Check,
    CheckContractError,
    CheckRun,
    Scenario,
    Shard,
    Step,
    StepContext,
    disabled,
    noop,
    select,
)
from lockstep.scenarios.actions import Action, Initialize, Manipulate, Start, Validate
from tests.scenario_fixture import CHECKS, plan, releases


def _step(ctx: StepContext) -> None:
    """Never run here."""


def make_check(name: str, steps: int = 2, *, base: type[Check] = Check,
               **attrs: object) -> type[Check]:
    """A check class named `name` whose manipulate() returns `steps` steps."""
    def manipulate(self: Check) -> list[Step]:
        return [_step] * steps

    def validate(self: Check) -> Step:
        return _step

    return type(name, (base,), {"manipulate": manipulate, "validate": validate, **attrs})


class Plain(Scenario):
    """S(T) I M1 M2 V V, as no-restart."""

    name = "plain"

    def actions(self) -> list[Action]:
        return [Start(), Initialize(), Manipulate(phase=1), Manipulate(phase=2), Validate(),
                Validate()]


class NoActionsExecutor:
    """An executor that fails the test if any action reaches it."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"executor.{name} called")


@pytest.mark.parametrize("count", [0, 1, 3])
def test_f1_manipulate_must_return_two_steps(count: int) -> None:
    bad = make_check("BadCount", count)
    with pytest.raises(CheckContractError) as info:
        Plain([make_check("Good"), bad], NoActionsExecutor(), seed=3)  # type: ignore[arg-type]
    assert "BadCount" in info.value.message and f"returned {count} steps" in info.value.message
    assert info.value.exit_code == 2


def test_manipulate_is_called_once_and_steps_are_typed() -> None:
    calls: list[int] = []

    def manipulate(self: Check) -> list[Step]:
        calls.append(1)
        return [_step, ["echo", "phase-2"]]

    counted = type("Counted", (Check,), {"manipulate": manipulate,
                                         "validate": lambda self: _step})
    scenario = Plain([counted], None, seed=1)
    assert calls == [1]
    assert scenario.checks[0].step("2") == ["echo", "phase-2"]
    assert scenario.checks[0].step("1") is _step
    assert calls == [1]
    not_a_step = make_check("Str", manipulate=lambda self: [_step, "echo hi"])
    with pytest.raises(CheckContractError, match="Str: manipulate\\(\\)\\[1\\] returned str"):
        Plain([not_a_step], None, seed=1)


def test_initialize_and_validate_are_called_just_before_their_step() -> None:
    class Later(Check):
        __abstract__ = False

        def initialize(self) -> Step:
            self.made = "x"
            return _step

        def manipulate(self) -> list[Step]:
            return [_step, _step]

        def validate(self) -> Step:
            return ["check", self.made]  # uses what initialize set

    run = CheckRun.prepare(Later(None, random.Random(0)))
    assert run.step("initialize") is _step
    assert run.step("validate") == ["check", "x"]
    assert run.step("validate") == ["check", "x"]
    assert Check.initialize(run.check) is noop


def test_selection_order_filters_and_shards_before_disabled() -> None:
    names = ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot"]
    classes = {n: make_check(n) for n in names}
    classes["Bravo"] = disabled("broken upstream")(classes["Bravo"])
    classes["Delta"] = make_check("Delta", can_run=classmethod(lambda cls, b, t: b is not None))
    pool = list(classes.values())[::-1]
    everything = select(pool, base_version=None)
    assert [c.name() for c in everything.selected] == ["Alpha", "Charlie", "Echo", "Foxtrot"]
    assert everything.disabled == (("Bravo", "broken upstream"),)
    assert everything.skipped == ("Delta",)
    # --shard slices the name-sorted list before @disabled: disabling moves no check
    shard0 = select(pool, shard=Shard.parse("0/2"), base_version="v1")
    assert [c.name() for c in shard0.selected] == ["Alpha", "Charlie", "Echo"]
    shard1 = select(pool, shard=Shard(1, 2), base_version="v1")
    assert [c.name() for c in shard1.selected] == ["Delta", "Foxtrot"]
    assert shard1.disabled == (("Bravo", "broken upstream"),)
    # --check applies before --shard
    picked = select(pool, names=["Foxtrot", "Alpha", "Echo"], shard=Shard(1, 2))
    assert [c.name() for c in picked.selected] == ["Echo"]
    with pytest.raises(UsageError, match="unknown check Zulu"):
        select(pool, names=["Zulu"])
    for bad in ("2/2", "x/3", "1", "-1/2"):
        with pytest.raises(UsageError, match="--shard"):
            Shard.parse(bad)


def test_abstract_is_read_from_the_class_itself_and_names_are_unique() -> None:
    base = make_check("Base", __abstract__=True)
    child = make_check("Child", base=base)  # inherits __abstract__, but not in its __dict__
    assert [c.name() for c in select([base, child]).selected] == ["Child"]
    other = make_check("Child")
    with pytest.raises(CheckContractError, match="two checks are named Child"):
        select([child, other])
    assert select([child, child]).selected == (child,)  # the same class twice is one check


def test_can_run_is_evaluated_once_at_construction() -> None:
    seen: list[tuple[str | None, str | None]] = []

    def can_run(cls: type[Check], base: str | None, target: str | None) -> bool:
        seen.append((base, target))
        return True

    counted = make_check("Counted", can_run=classmethod(can_run))
    Plain([counted], None, seed=5, releases=releases())
    assert seen == [(None, "v2026.11.2")]


class Recorder(Check):
    """Records the first values of its rng, class-wide, to compare across scenarios."""

    __abstract__ = True
    draws: dict[str, list[float]] = {}  # noqa: RUF012

    def manipulate(self) -> list[Step]:
        Recorder.draws.setdefault(type(self).name(), []).append(self.rng.random())
        return [_step, _step]

    def validate(self) -> Step:
        return _step


def test_f17_a_checks_rng_ignores_the_other_checks() -> None:
    a, b, c = (type(n, (Recorder,), {}) for n in ("A", "B", "C"))
    Recorder.draws.clear()
    first = plan("zero-downtime-upgrade", 77, checks=[a, b])
    second = plan("zero-downtime-upgrade", 77, checks=[a, c])
    assert Recorder.draws["A"][0] == Recorder.draws["A"][1]
    assert Recorder.draws["A"][0] == random.Random("77/A").random()
    assert first.action_lines() == second.action_lines()
    assert first.inputs != second.inputs  # the check lines differ, and show why


def test_seedless_fixed_scenario_keeps_name_order_and_none_rngs() -> None:
    a, b, c = (type(n, (Recorder,), {}) for n in ("Zed", "Abe", "Mid"))
    Recorder.draws.clear()
    scenario = Plain([a, b, c], None, seed=None)
    assert [r.name for r in scenario.checks] == ["Abe", "Mid", "Zed"]
    assert Recorder.draws["Zed"] == [random.Random("none/Zed").random()]
    shuffled = Plain([a, b, c], None, seed=4)
    expected = ["Abe", "Mid", "Zed"]
    random.Random(4).shuffle(expected)
    assert [r.name for r in shuffled.checks] == expected


@pytest.mark.parametrize("seed", [-1, 2**63, True, "7"])
def test_seed_range(seed: object) -> None:
    with pytest.raises(UsageError, match="invalid seed"):
        Plain(CHECKS, None, seed=seed)  # type: ignore[arg-type]
    assert Plain(CHECKS, None, seed=2**63 - 1).seed == 2**63 - 1


def test_the_docs_example_check_follows_the_contract() -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "scenarios.md").read_text()
    match = re.search(r"```python\n(.*?)```", text, re.S)
    assert match is not None
    namespace: dict[str, object] = {}
    exec(compile(match.group(1), "docs/scenarios.md", "exec"), namespace)
    example = namespace["KeyValueSurvives"]
    assert isinstance(example, type) and issubclass(example, Check)
    scenario = Plain([example], None, seed=11)
    run = scenario.checks[0]
    assert callable(run.step("initialize")) and callable(run.step("validate"))
    assert run.check.key.startswith("kv-")  # type: ignore[attr-defined]  # set by initialize()

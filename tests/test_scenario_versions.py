"""Base versions (spec §5): F7, the filters, `--from` / `--path`, and not enough releases."""

from __future__ import annotations

import pytest

from lockstep.config import DEFAULT_TAG_FORMAT
from lockstep.errors import UsageError, ValidationError
from lockstep.scenarios import PlanOptions, Releases, ScenarioSettings, TagFormat
from tests.scenario_fixture import CHECKS, plan, releases, scenario

EXAMPLE = ["v2026.08.1", "v2026.08.2", "v2026.09.1", "v2026.09.4", "v2026.10.1",
           "v2026.10.2-rc.1", "v2026.11.1"]


def example(missing: set[str], **kwargs: object) -> Releases:
    asked: list[str] = []

    def has(tag: str) -> bool:
        asked.append(tag)
        return tag not in missing

    out = Releases(EXAMPLE, tag_format=DEFAULT_TAG_FORMAT, target_version="v2026.11.2",
                   has_artifacts=has, **kwargs)  # type: ignore[arg-type]
    assert asked == [v.tag for v in out.surviving]  # asked once per surviving tag, ascending
    return out


def test_f7_the_spec_example() -> None:
    assert example(set()).minor_versions == ("v2026.10.1", "v2026.09.4", "v2026.08.2")
    broken = example({"v2026.09.4"})
    assert broken.minor_versions == ("v2026.10.1", "v2026.09.1", "v2026.08.2")
    assert (broken.last, broken.previous) == ("v2026.10.1", "v2026.09.1")
    assert broken.input_lines() == [
        "target v2026.11.2", "tag v2026.08.1 ok", "tag v2026.08.2 ok", "tag v2026.09.1 ok",
        "tag v2026.09.4 missing", "tag v2026.10.1 ok"]


def test_filters_prereleases_skips_series_and_limit() -> None:
    pre = example(set(), include_prereleases=True)
    assert pre.minor_versions[0] == "v2026.10.2-rc.1"  # a prerelease is still older than T
    skipping = example(set(), settings=ScenarioSettings(skip_versions=("v2026.10.1",)))
    assert skipping.minor_versions == ("v2026.09.4", "v2026.08.2")
    none_ok = example({"v2026.10.1"}, settings=ScenarioSettings(previous_series=2))
    assert none_ok.minor_versions == ("v2026.09.4", "v2026.08.2")  # series 10 skipped
    assert example(set(), settings=ScenarioSettings(previous_series=1)).minor_versions == (
        "v2026.10.1",)


def test_unparsable_tags_warn_and_other_formats_parse() -> None:
    warnings: list[str] = []
    fixture = releases(warnings=warnings)
    assert warnings == ["skipping tag 'nightly-2026-11-30': it does not follow the tag format "
                        "'v{year}.{month:02d}.{n}'"]
    assert "v2026.12.1" not in {v.tag for v in fixture.surviving}  # newer than the target
    assert "v2026.11.1" not in {v.tag for v in fixture.surviving}  # the target's own series
    fmt = TagFormat("release-{year}.{n}")
    parsed = fmt.parse("release-2026.7-beta.2")
    assert parsed is not None and parsed.numbers == (2026, 7) and parsed.series == (2026,)
    assert parsed.prerelease == "beta.2"
    no_v = TagFormat(DEFAULT_TAG_FORMAT).parse("2026.11.3")
    assert no_v is not None and no_v.numbers == (2026, 11, 3)  # the v is optional
    assert fmt.parse("v2026.11.3") is None
    with pytest.raises(ValidationError, match="malformed target version"):
        Releases([], tag_format=DEFAULT_TAG_FORMAT, target_version="latest",
                 has_artifacts=lambda t: True)


def test_not_enough_releases() -> None:
    few = Releases(["v2026.10.1"], tag_format=DEFAULT_TAG_FORMAT, target_version="v2026.11.2",
                   has_artifacts=lambda t: True)
    with pytest.raises(UsageError) as info:
        _ = few.previous
    assert info.value.message == "not enough releases: needs 2, found 1"
    assert info.value.hint and info.value.exit_code == 2
    from lockstep.scenarios import scenario_class
    with pytest.raises(UsageError, match="needs 2, found 1"):
        scenario_class("upgrade-via-previous")(CHECKS, None, 1, releases=few)
    assert scenario_class("zero-downtime-upgrade")(CHECKS, None, 1, releases=few).resolved_base \
        == "v2026.10.1"
    empty = Releases([], tag_format=DEFAULT_TAG_FORMAT, target_version="v2026.11.2",
                     has_artifacts=lambda t: True)
    assert scenario_class("zero-downtime-restart")(CHECKS, None, 1, releases=empty).plan
    with pytest.raises(UsageError, match="needs 1, found 0"):
        scenario_class("random-upgrade-path")(CHECKS, None, 1, releases=empty)


def test_from_fixes_the_oldest_version() -> None:
    single = plan("upgrade-from-previous", options=PlanOptions(from_version="v2026.07.1"))
    assert single.base == "v2026.07.1"
    assert single.action_lines()[0] == "001 Start version=v2026.07.1"
    via = scenario("upgrade-via-previous", options=PlanOptions(from_version="v2026.10.1"))
    starts = [e.action.line() for e in via.plan if e.action.name == "Start"]
    assert starts[:2] == ["Start version=v2026.10.1", "Start version=v2026.10.2"]
    # nothing newer in minor_versions: the newest release between V and the target, even in
    # the target's own series (lockstep's choice where the spec would exit 2)
    late = scenario("upgrade-via-previous", options=PlanOptions(from_version="v2026.10.2"))
    starts = [e.action.line() for e in late.plan if e.action.name == "Start"]
    assert starts[:2] == ["Start version=v2026.10.2", "Start version=v2026.11.1"]
    assert late.releases is not None
    assert "tag v2026.11.1 ok (between)" in late.releases.input_lines()
    with pytest.raises(UsageError, match=r"no release between v2026\.11\.1 and the target"):
        scenario("upgrade-via-previous", options=PlanOptions(from_version="v2026.11.1"))
    # step 2 does not apply to --from: the target's own series is allowed
    assert plan("zero-downtime-upgrade",
                options=PlanOptions(from_version="v2026.11.1")).base == "v2026.11.1"
    with pytest.raises(UsageError, match="not older than the target"):
        scenario("zero-downtime-upgrade", options=PlanOptions(from_version="v2026.12.1"))
    with pytest.raises(UsageError, match="no such release tag"):
        scenario("zero-downtime-upgrade", options=PlanOptions(from_version="v2026.10.9"))
    with pytest.raises(ValidationError, match="malformed --from"):
        scenario("zero-downtime-upgrade", options=PlanOptions(from_version="ten"))
    with pytest.raises(UsageError, match="takes no --from"):
        scenario("no-restart", options=PlanOptions(from_version="v2026.10.1"))


def test_random_path_with_from_and_path() -> None:
    for seed in range(40):
        s = scenario("random-upgrade-path", seed,
                     options=PlanOptions(from_version="v2026.07.1"))
        versions = s.path.versions  # type: ignore[attr-defined]
        assert versions[0] == "v2026.07.1"
        assert all(v > "v2026.08" for v in versions[1:])  # only series newer than V's
    fixed = scenario("random-upgrade-path", 3,
                     options=PlanOptions(path=("v2026.01.1", "v2026.05.1")))
    assert fixed.path.versions == ("v2026.01.1", "v2026.05.1")  # type: ignore[attr-defined]
    assert build_text(fixed).count("path-override = v2026.01.1,v2026.05.1") == 1
    with pytest.raises(UsageError, match="must ascend"):
        scenario("random-upgrade-path", 3, options=PlanOptions(path=("v2026.05.1", "v2026.01.1")))
    with pytest.raises(UsageError, match="exclude each other"):
        scenario("random-upgrade-path", 3,
                 options=PlanOptions(path=("v2026.05.1",), from_version="v2026.01.1"))
    with pytest.raises(UsageError, match="only to random-upgrade-path"):
        scenario("zero-downtime-upgrade", 3, options=PlanOptions(path=("v2026.05.1",)))
    with pytest.raises(UsageError, match="needs a seed"):
        scenario("random-upgrade-path", None)


def build_text(s: object) -> str:
    from lockstep.scenarios import build_plan
    from tests.scenario_fixture import MANIFEST_SHA256
    return build_plan(s, MANIFEST_SHA256).text()  # type: ignore[arg-type]


def test_settings_defaults_and_validation() -> None:
    from pydantic import ValidationError as PydanticError

    cfg = ScenarioSettings()
    assert (cfg.step_timeout, cfg.max_restarts, cfg.previous_series) == (600, 5, 4)
    assert (cfg.random_previous_series, cfg.random_keep_probability, cfg.random_max_hops) == (
        8, 0.5, 6)
    assert cfg.max_hop_series is None and cfg.random_patch == "random" and cfg.plugin is None
    ScenarioSettings.model_validate({"plugin": "demo.checks", "skip_versions": ["v2026.01.1"]})
    for bad in ({"plugin": "not a module"}, {"random_patch": "oldest"},
                {"random_keep_probability": 1.5}, {"max_hop_series": 0}, {"stepp_timeout": 1}):
        with pytest.raises(PydanticError):
            ScenarioSettings.model_validate(bad)


def test_eventually_retries_until_the_read_matches() -> None:
    import random as _random

    from lockstep.scenarios import StepContext

    ctx = StepContext(scenario="s", seed=1, check="C", phase="1", instance="main",
                      current_version=None, generation=0, base_version=None,
                      target_version="v2026.11.2", rng=_random.Random(0))
    attempts: list[int] = []

    def read() -> int:
        attempts.append(1)
        if len(attempts) < 3:
            raise AssertionError("not caught up yet")
        return 42

    assert ctx.eventually(read, timeout=30, interval=0) == 42 and len(attempts) == 3
    with pytest.raises(AssertionError, match="never"):
        ctx.eventually(lambda: (_ for _ in ()).throw(AssertionError("never")), timeout=0)

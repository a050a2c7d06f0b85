"""Shared fixtures: isolated git configuration and real sample systems on local bare remotes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import STARTED, System
from tests.system import isolated_git as git_isolation

# The longest tests (seconds on a 2-core machine), longest first: they start first, so under
# `pytest -n 2` no long test begins near the end and leaves one worker running alone. Entries are
# a test (all its parameters) or a whole file (for a module-scoped fixture, kept together); a
# renamed test only loses its place.
SLOW_FIRST = (
    "tests/test_serve_fuzz.py::test_no_generated_request_gets_a_server_error",  # 110
    "tests/test_cli.py::test_demo_killed_while_building_then_end_to_end_and_rerun",  # 70
    "tests/test_scenario_stage.py::test_upgrade_stage_lands_good_versions_and_rejects_the_broken_"
    "migration",  # 36
    "tests/test_rollout_crash.py::test_a_controller_killed_in_each_phase_finishes_the_rollout_on_"
    "restart",  # 45 over 4 parameters
    "tests/test_release_crash.py::test_a_crash_at_each_step_is_repaired_by_the_rerun",  # 60 over 7
    "tests/test_release_real.py::test_release_cut_against_real_servers",  # 24
    "tests/test_scenario_demo.py",  # 18 building the demo once, then its tests
    "tests/test_convert_properties.py",  # 15
    "tests/test_bazel.py::test_bazel_check_stage_lands_a_good_bump_and_rejects_a_broken_api",  # 15
    "tests/test_status.py::test_status_shows_the_newest_finished_and_pages_through_all",  # 14
    "tests/test_release_e2e.py::test_a_release_tags_waits_and_pins_in_dependency_order",  # 14
    "tests/test_release_faults.py::test_an_artifact_that_never_appears_times_out_and_the_rerun_"
    "resumes",  # 13
    "tests/test_release_faults.py::test_a_second_cut_is_busy_and_a_killed_holders_lock_is_taken_"
    "over",  # 12
    "tests/test_release_crash.py::test_a_crash_during_the_wait_resumes_waiting",  # 12
    "tests/test_rollout_edges.py::test_v1alpha1_mode_end_to_end",  # 12
)


def _slow_rank(nodeid: str) -> int:
    """The position of the SLOW_FIRST entry a test belongs to; len(SLOW_FIRST) for the rest."""
    for rank, entry in enumerate(SLOW_FIRST):
        if nodeid == entry or nodeid.startswith((entry + "[", entry + "::")):
            return rank
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the known-long tests first, longest first; the rest keep their order."""
    items.sort(key=lambda item: _slow_rank(item.nodeid))


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every git call sees a throwaway global config and never prompts."""
    with git_isolation(tmp_path_factory):
        yield


@pytest.fixture(autouse=True)
def no_worker_left_behind() -> Iterator[None]:
    """A background worker that a failing test left running is killed, not left to block."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture
def system(tmp_path: Path) -> System:
    """Three components (alpha, beta, gamma) with versions v1.0.0..v1.3.0 and an integration repo.

    Stages: build → check → deploy, each running tests/gate.py, which fails or sleeps as the
    test's rules say.
    """
    return System.create(tmp_path)


@pytest.fixture
def env_for_cli() -> dict[str, str]:
    """The environment for lockstep subprocesses (inherits the isolated git config)."""
    return dict(os.environ)

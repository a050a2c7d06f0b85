"""Shared fixtures: isolated git configuration and real sample systems on local bare remotes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import STARTED, System
from tests.system import isolated_git as git_isolation


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

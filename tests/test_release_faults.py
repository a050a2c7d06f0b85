"""`release cut` under faults and bad inputs (spec/release.md §3, §4, §8: R3, R11, R14, R15,
R18–R21, the lock): each case gives one clear error, and leaves every repository unchanged
(errors found while planning: exit 2, no tag, no journal row) or resumable (a rerun finishes).

Everything is real: bare git remotes with hooks, the demo's artifact-building post-receive hook
writing an OCI layout registry, `lockstep` in its own process. Plan errors are also driven
through the CLI's entry point in this process (they end before any thread, signal handler or
journal row), which keeps the many bad-input cases fast."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lockstep import git
from lockstep.cli import main as cli_main
from lockstep.demo_artifacts import ArtifactHook, build_artifact
from lockstep.release.journal import Journal
from lockstep.release.status import release_status
from tests.release_system import INTEGRATION_TAG, LOCKSTEP, REGISTRY, ReleaseSystem

pytestmark = pytest.mark.slow

T = INTEGRATION_TAG  # every component's release tag ([release] tag = "{version}")
PINNED_DOCKERFILE = (  # platform's Dockerfile after the release (as the e2e test has it)
    "# syntax=docker/dockerfile:1\n"
    "ARG BASE_TAG=2026.11.1\n"
    f"FROM --platform=$BUILDPLATFORM {REGISTRY}/demo/console:2026.11.1 AS console\n"
    f"FROM {REGISTRY}/demo/base:${{BASE_TAG}}\n"
    "COPY --from=console /app /console\n"
)
PINNED_VALUES = (
    "# platform chart values\n"
    "console:\n"
    "  image:\n"
    f"    repository: {REGISTRY}/demo/console  # the UI\n"
    '    tag: "2026.11.1"\n'
)


# -- helpers --------------------------------------------------------------------------------

def _journal(s: ReleaseSystem) -> Journal:
    return Journal(s.ws_dir / ".lockstep" / "release.db")


def _rows(s: ReleaseSystem) -> list[tuple[str, str, str]]:
    if not (s.ws_dir / ".lockstep" / "release.db").exists():
        return []
    return [(e.component, e.step, e.state) for e in _journal(s).entries(T, "default")]


def _refs(s: ReleaseSystem) -> dict[str, dict[str, str]]:
    """Every ref of every component remote (name → ref → object)."""
    out = {}
    for name, bare in s.remotes.items():
        lines = git.out(["for-each-ref", "--format=%(refname) %(objectname)"], bare)
        out[name] = dict(line.split(" ", 1) for line in lines.splitlines())
    return out


def _assert_untouched(s: ReleaseSystem, before: dict[str, dict[str, str]]) -> None:
    """Nothing changed: the same refs everywhere, no release row in the journal."""
    assert _refs(s) == before
    assert _rows(s) == []
    if (s.ws_dir / ".lockstep" / "release.db").exists():
        assert _journal(s).versions("default") == []


def _status(s: ReleaseSystem) -> dict[str, dict[str, Any]]:
    """What `release status --json` shows, per component (its function, in this process)."""
    found = release_status(_journal(s), "default", T)
    assert found is not None
    return {c["component"]: c for c in found["components"]}


def _open_gates(s: ReleaseSystem, *names: str) -> None:
    for name in names or tuple(s.gates):
        s.gates[name].parent.mkdir(parents=True, exist_ok=True)
        s.gates[name].touch()


def _until(cond: Callable[[], bool], what: str, proc: subprocess.Popen[str] | None = None,
           timeout: float = 60.0) -> None:
    """Block until `cond()` holds (an event the test observes: a journal row)."""
    end = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"lockstep exited {proc.returncode} before {what}:\n{out}{err}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _start(s: ReleaseSystem, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*LOCKSTEP, "release", "cut", *args, "-C", str(s.ws_dir)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _waiting(s: ReleaseSystem, *names: str) -> Callable[[], bool]:
    return lambda: all((n, "wait", "started") in _rows(s) for n in names)


def _inproc(s: ReleaseSystem, capsys: pytest.CaptureFixture[str], *args: str
            ) -> tuple[int, str]:
    """`lockstep ARGS -C ws` through the CLI's entry point in this process: (exit, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        cli_main.run([*args, "-C", str(s.ws_dir)])
    code = ended.value.code
    return code if isinstance(code, int) else 0, capsys.readouterr().err


def _one_error(err: str, *needles: str) -> None:
    """One `error: …` line holding every needle."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def _commit_on(s: ReleaseSystem, name: str, files: dict[str, str], message: str,
               branch: str = "elsewhere", parent: str | None = None) -> str:
    """A commit on S (or `parent`) in a component's remote, pushed as `branch`."""
    work = s.root / "work" / f"{name}-{branch}"
    git.run(["clone", "--quiet", str(s.remotes[name]), str(work)])
    git.run(["checkout", "--quiet", "--detach", parent or s.sources[name]], work)
    for rel, text in files.items():
        (work / rel).write_text(text)
    git.run(["add", "--all"], work)
    git.run(["commit", "--quiet", "-m", message], work)
    sha = git.out(["rev-parse", "HEAD"], work)
    git.run(["push", "--quiet", "origin", f"HEAD:refs/heads/{branch}"], work)
    return sha


def _set_remote_tag(s: ReleaseSystem, name: str, commit: str) -> None:
    git.run(["update-ref", f"refs/tags/{T}", commit], s.remotes[name])


def _tag_creating_hook(hook_repo: Path, on_ref: str, target_repo: Path, commit: str) -> None:
    """A pre-receive hook in `hook_repo`: when `on_ref` arrives, another client creates T at
    `commit` in `target_repo` (outside the push's quarantine, as a separate git would)."""
    script = hook_repo / "hooks" / "pre-receive"
    script.write_text(
        "#!/bin/sh\n"
        "while read old new ref; do\n"
        f'  if [ "$ref" = "{on_ref}" ]; then\n'
        "    env -u GIT_DIR -u GIT_QUARANTINE_PATH -u GIT_OBJECT_DIRECTORY \\\n"
        "        -u GIT_ALTERNATE_OBJECT_DIRECTORIES \\\n"
        f"        git --git-dir='{target_repo}' update-ref 'refs/tags/{T}' {commit} || exit 1\n"
        "  fi\n"
        "done\n")
    script.chmod(0o755)


# -- R3: tags that are not the release's ---------------------------------------------------

def test_a_tag_at_a_child_of_s_differing_by_one_line_is_a_plan_time_conflict(
        tmp_path: Path) -> None:
    s = ReleaseSystem.create(tmp_path)
    # Everything a lockstep pin commit has (parent S, the trailer, the pins) but one line.
    message = f"release {T}: pin 3 references in platform\n\nLockstep-Release: {T}\n"
    near = _commit_on(s, "platform", {
        "Dockerfile": PINNED_DOCKERFILE,
        "values.yaml": PINNED_VALUES.replace("# platform chart values", "# edited by hand")},
        message)
    _set_remote_tag(s, "platform", near)
    before = _refs(s)
    proc = s.cli("release", "cut")
    assert proc.returncode == 2, proc.stderr
    _one_error(proc.stderr, f"TagConflictError: tag {T} in platform points at {near}, the "
               f"release expects a pin commit on {s.sources['platform']}")
    _assert_untouched(s, before)

    # The same commit with the computed tree is this release's tag: reused, not replaced.
    exact = _commit_on(s, "platform", {"Dockerfile": PINNED_DOCKERFILE,
                                       "values.yaml": PINNED_VALUES}, message, branch="exact")
    _set_remote_tag(s, "platform", exact)
    build_artifact(s.remotes["platform"], exact, T, ArtifactHook(  # its CI, as a push would
        repository="demo/platform", layout_root=s.layout))
    s.cli("release", "cut", check=True)
    assert s.remote_tag("platform") == exact
    assert s.parents("chart", s.remote_tag("chart") or "") == [s.sources["chart"]]


def test_a_tag_at_s_whose_pins_are_not_applied_is_a_plan_time_conflict(tmp_path: Path) -> None:
    # S itself is acceptable only when every pin is already applied there; platform's are not.
    s = ReleaseSystem.create(tmp_path)
    _set_remote_tag(s, "platform", s.sources["platform"])
    before = _refs(s)
    proc = s.cli("release", "cut")
    assert proc.returncode == 2, proc.stderr
    _one_error(proc.stderr, f"TagConflictError: tag {T} in platform points at "
               f"{s.sources['platform']}, the release expects a pin commit on "
               f"{s.sources['platform']}")
    _assert_untouched(s, before)


@pytest.mark.parametrize("when", ["before-its-push", "during-its-push"])
def test_a_tag_made_by_another_client_after_planning_fails_that_component_only(
        tmp_path: Path, when: str) -> None:
    s = ReleaseSystem.create(tmp_path)
    other = _commit_on(s, "platform", {"x": "x\n"}, "someone else's release")
    if when == "before-its-push":
        # console's tag push (after the plan) makes another client tag platform at once.
        _tag_creating_hook(s.remotes["console"], f"refs/tags/{T}", s.remotes["platform"], other)
    else:
        # platform's own tag push finds T created meanwhile: the push is rejected, re-checked.
        _tag_creating_hook(s.remotes["platform"], f"refs/tags/{T}", s.remotes["platform"],
                           other)
    chart_refs = _refs(s)["chart"]
    proc = s.cli("release", "cut", "--json")
    assert proc.returncode == 1, proc.stderr
    status = {c["component"]: c for c in json.loads(proc.stdout)["components"]}
    assert {n: c["state"] for n, c in status.items()} == {
        "console": "done", "base": "done", "platform": "failed", "chart": "blocked"}
    error = str(status["platform"]["error"])
    assert error.startswith(f"TagConflictError: tag {T} in platform points at {other}"), error
    assert len(error.splitlines()) == 1
    # The independent components are released; platform's tag stays the other client's.
    assert s.remote_tag("console") == s.sources["console"]
    assert s.remote_tag("base") == s.sources["base"]
    assert s.remote_tag("platform") == other
    assert _refs(s)["chart"] == chart_refs
    pushed = ("platform", "push", "started") in _rows(s)
    assert pushed is (when == "during-its-push")


# -- R11: an artifact that never appears ---------------------------------------------------

def test_an_artifact_that_never_appears_times_out_and_the_rerun_resumes(tmp_path: Path) -> None:
    s = ReleaseSystem.create(tmp_path, gated={"base"}, release_settings=(
        'wait_timeout = "2s"\npoll = { initial = "0.05s", max = "0.2s" }\n'))
    counts = {n: s.commit_count(n) for n in s.remotes}
    started = time.monotonic()
    proc = s.cli("release", "cut", "--json")
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - started < 30
    status = {c["component"]: c for c in json.loads(proc.stdout)["components"]}
    assert {n: c["state"] for n, c in status.items()} == {
        "console": "done", "base": "failed", "platform": "blocked", "chart": "blocked"}
    error = str(status["base"]["error"])
    assert error.startswith(f"ArtifactTimeoutError: {REGISTRY}/demo/base:2026.11.1 not found "
                            "after 2s ("), error
    assert "last: no layout directory" in error
    assert re.search(r"tag v2026\.11\.1 pushed 0m0[0-9]s ago", error), error
    assert error.count("rerun to keep waiting") == 1, error
    assert len(error.splitlines()) == 1
    shown = _status(s)
    assert (shown["base"]["step"], shown["base"]["state"]) == ("wait", "failed")
    tag_object = s.tag_object("base")
    assert s.remote_tag("base") == s.sources["base"]

    # The artifact appears; a rerun (with room for the downstream builds) finishes, reusing
    # base's tag and making one pin commit per downstream repository.
    _open_gates(s, "base")
    config = s.ws_dir / "lockstep.toml"
    config.write_text(config.read_text().replace('wait_timeout = "2s"', 'wait_timeout = "60s"'))
    rerun = s.cli("release", "cut", "--json", check=True)
    assert json.loads(rerun.stdout)["state"] == "done"
    assert s.tag_object("base") == tag_object
    assert _rows(s).count(("base", "push", "started")) == 1, "the rerun pushed base again"
    for name in ("console", "base"):
        assert s.commit_count(name) == counts[name]
    for name in ("platform", "chart"):
        assert s.commit_count(name) == counts[name] + 1, f"{name}: a duplicate pin commit"
        assert s.parents(name, s.remote_tag(name) or "") == [s.sources[name]]


# -- R21 / R13: advancing a branch ---------------------------------------------------------

def test_advance_fast_forwards_the_branch_or_skips_it_with_a_warning(tmp_path: Path) -> None:
    s = ReleaseSystem.create(tmp_path, component_settings={
        "platform": 'branch = "main"\n', "chart": 'branch = "main"\n'})
    # platform's main moved past S before the run; chart's main is still at S.
    moved = _commit_on(s, "platform", {"later": "later\n"}, "later work", branch="main")
    proc = s.cli("release", "cut", "--json")
    assert proc.returncode == 0, proc.stderr
    status = {c["component"]: c for c in json.loads(proc.stdout)["components"]}
    assert {c["state"] for c in status.values()} == {"done"}

    chart_pin = s.remote_tag("chart")
    assert chart_pin is not None and s.parents("chart", chart_pin) == [s.sources["chart"]]
    assert git.out(["rev-parse", "refs/heads/main"], s.remotes["chart"]) == chart_pin
    assert status["chart"]["advance_warning"] is None

    platform_pin = s.remote_tag("platform")
    assert platform_pin is not None
    assert s.parents("platform", platform_pin) == [s.sources["platform"]]
    assert git.out(["rev-parse", "refs/heads/main"], s.remotes["platform"]) == moved
    warning = (f"branch main is at {moved[:12]}, not {s.sources['platform'][:12]}; the pin "
               f"commit is only on tag {T}")
    assert status["platform"]["advance_warning"] == warning
    assert json.loads(proc.stdout)["warnings"] == [f"platform: {warning}"]
    assert ("platform", "advance", "skipped") in _rows(s)


def test_a_crash_after_advance_is_converged_by_the_rerun(tmp_path: Path) -> None:
    s = ReleaseSystem.create(tmp_path, component_settings={"platform": 'branch = "main"\n'})
    counts = {n: s.commit_count(n) for n in s.remotes}
    crashed = s.cli("release", "cut", "--test-crash-at", "release-after-advance")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    # At the crash: platform's tag and main at its pin commit, advance recorded; chart untouched.
    pin = s.remote_tag("platform")
    assert pin is not None and s.parents("platform", pin) == [s.sources["platform"]]
    assert git.out(["rev-parse", "refs/heads/main"], s.remotes["platform"]) == pin
    assert [r for r in _rows(s) if r[0] == "platform"][-1] == ("platform", "advance", "done")
    assert s.remote_tag("chart") is None

    s.cli("release", "cut", check=True)
    assert s.remote_tag("platform") == pin
    assert git.out(["rev-parse", "refs/heads/main"], s.remotes["platform"]) == pin
    for name in ("platform", "chart"):
        assert s.commit_count(name) == counts[name] + 1, f"{name}: a duplicate pin commit"
    assert {c["state"] for c in _status(s).values()} == {"done"}


# -- R14 / R15: pins that cannot be computed -----------------------------------------------

COMPOSE = (f"services:\n  ui:\n    image: {REGISTRY}/demo/console:0.9.0\n"
           f"  ui2:\n    image: {REGISTRY}/demo/console:0.9.0\n")
SHARED_ARG = (f"ARG TAG=0.9.0\nFROM {REGISTRY}/demo/console:${{TAG}} AS ui\n"
              f"FROM {REGISTRY}/demo/other:${{TAG}}\n")


def _pin(file: str, kind: str = "helm-values", repo: str = "platform",
         component: str = "console", extra: str = "") -> str:
    image = f'image = "demo/{component}"\n' if kind in ("dockerfile", "helm-values") else ""
    return (f'\n[[pins]]\nrepo = "{repo}"\ncomponent = "{component}"\nfile = "{file}"\n'
            f'kind = "{kind}"\n{image}{extra}')


def _symlink(name: str, work: Path) -> None:
    if name == "platform":
        (work / "linked").symlink_to("docker")
        git.run(["add", "linked"], work)


def _submodule(name: str, work: Path) -> None:
    if name == "platform":
        git.run(["update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},vendor/sub"],
                work)


PIN_CASES: dict[str, tuple[dict[str, object], tuple[str, ...]]] = {
    "not-found": ({"files": {"platform": {"deploy.yaml": "image: nginx:1.25\n"}},
                   "extra_config": _pin("deploy.yaml")},
                  ("PinNotFoundError", "deploy.yaml")),
    "count": ({"files": {"platform": {"compose.yaml": COMPOSE}},
               "extra_config": _pin("compose.yaml")},
              ("PinCountError", "compose.yaml:3", "compose.yaml:5")),
    "ambiguous": ({"files": {"platform": {"shared.Dockerfile": SHARED_ARG}},
                   "extra_config": _pin("shared.Dockerfile", "dockerfile")},
                  ("PinAmbiguousError", "shared.Dockerfile:1", "demo/other")),
    "conflict": ({"extra_config": _pin("Chart.yaml", "chart", "chart", "chart",
                                       'fields = ["version"]\nvalue = "{version}-rc"\n')},
                 ("PinConflictError", "Chart.yaml:3")),
    "symlink": ({"files": {"platform": {"docker/Dockerfile": PINNED_DOCKERFILE}},
                 "prepare": _symlink, "extra_config": _pin("linked/Dockerfile", "dockerfile")},
                ("PinPathError", "linked/Dockerfile", "symbolic link")),
    "submodule": ({"prepare": _submodule,
                   "extra_config": _pin("vendor/sub/Dockerfile", "dockerfile")},
                  ("PinPathError", "vendor/sub", "submodule")),
    # Refused when the configuration loads (`init` would refuse them too: added after it).
    "dotdot": ({"append": _pin("../integration/lockstep.toml")},
               ("pins.5.file", "'../integration/lockstep.toml'", "without '..'")),
    "absolute": ({"append": _pin("/etc/passwd")}, ("pins.5.file", "'/etc/passwd'")),
    "malformed-yaml": ({"files": {"platform": {"values.yaml": (
        "console:\n  image:\n    repository: registry.local/demo/console\n"
        "    tag: [0.9.0\n")}}}, ("PinParseError", "values.yaml:5", "malformed YAML")),
    "malformed-dockerfile": ({"files": {"platform": {"Dockerfile": (
        "ARG BASE_TAG=0.9.0\nFROM registry.local/demo/console:0.9.0 AS console\n"
        "FROM registry.local/demo/base:${BASE_TAG\n")}}}, ("PinParseError", "Dockerfile:3")),
}


@pytest.mark.parametrize("case", sorted(PIN_CASES))
def test_a_pin_that_cannot_be_computed_stops_the_release_before_any_tag(
        tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    options, needles = dict(PIN_CASES[case][0]), PIN_CASES[case][1]
    append = str(options.pop("append", ""))
    s = ReleaseSystem.create(tmp_path, **options)  # type: ignore[arg-type]
    config = s.ws_dir / "lockstep.toml"
    config.write_text(config.read_text() + append)
    before = _refs(s)
    code, err = _inproc(s, capsys, "release", "cut")
    assert code == 2, err
    _one_error(err, *needles)
    _assert_untouched(s, before)


# -- R18: names, graphs and URLs refused before any git command ----------------------------

@pytest.fixture
def git_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every git command lockstep runs from now on, one line each (a logging `git` on PATH)."""
    real = shutil.which("git")
    assert real is not None
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    log = tmp_path / "git.log"
    wrapper.write_text(f"#!/bin/sh\necho \"$*\" >> '{log}'\nexec '{real}' \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    return log


BAD_TAGS = ["-x", "v1..2", "a b", "v1@{0}", "@", "HEAD"]


def test_bad_release_tags_are_refused_before_any_git_command(
        tmp_path: Path, git_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = ReleaseSystem.create(tmp_path)
    before = _refs(s)
    config = s.ws_dir / "lockstep.toml"
    text = config.read_text()
    for tag in BAD_TAGS:
        git_log.write_text("")
        code, err = _inproc(s, capsys, "release", "cut", f"--version={tag}")
        assert code == 2, (tag, err)
        _one_error(err, f"invalid release version {tag!r}")
        assert git_log.read_text() == "", (tag, git_log.read_text())

        config.write_text(text.replace("[release]\n", f"[release]\ntag = {json.dumps(tag)}\n"))
        code, err = _inproc(s, capsys, "release", "cut")
        assert code == 2, (tag, err)
        _one_error(err, "release.tag")
        assert git_log.read_text() == "", (tag, git_log.read_text())
        config.write_text(text)
    _assert_untouched(s, before)


def test_a_dependency_cycle_is_named_in_order(tmp_path: Path, git_log: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    s = ReleaseSystem.create(tmp_path)
    config = s.ws_dir / "lockstep.toml"
    text = config.read_text()
    at = text.index("depends_on = []", text.index("[components.base]"))  # base: no deps yet
    config.write_text(f'{text[:at]}depends_on = ["platform"]{text[at + 15:]}')
    git_log.write_text("")
    code, err = _inproc(s, capsys, "release", "cut")
    assert code == 2, err
    _one_error(err, "DependencyCycleError: dependency cycle: base → platform → base")
    assert git_log.read_text() == ""


def test_an_ext_transport_url_is_refused_at_config_load(
        tmp_path: Path, git_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = ReleaseSystem.create(tmp_path)
    marker = tmp_path / "pwned"
    config = s.ws_dir / "lockstep.toml"
    config.write_text(config.read_text().replace(
        'url = "../remotes/console.git"', f'url = "ext::sh -c touch% {marker}"'))
    git_log.write_text("")
    code, err = _inproc(s, capsys, "release", "cut")
    assert code == 2, err
    _one_error(err, "components.console.url", "ext::")
    assert git_log.read_text() == "" and not marker.exists()


@pytest.mark.parametrize(("args", "needle"), [
    (("--config", "nope"), "configuration 'nope' is not in the manifest"),
    (("--manifest", "v1999.1.1"), "v1999.1.1"),
    (("--jobs", "0"), "--jobs"),
    (("--jobs", "many"), "--jobs"),
])
def test_unknown_configuration_manifest_or_jobs_is_one_line_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
        needle: str) -> None:
    s = ReleaseSystem.create(tmp_path)
    before = _refs(s)
    code, err = _inproc(s, capsys, "release", "cut", *args)
    assert code == 2, err
    _one_error(err, needle)
    _assert_untouched(s, before)


# -- R19: the registry's digest is not the manifest's --------------------------------------

def test_a_digest_unlike_the_manifests_stops_that_component_and_pins_nothing(
        tmp_path: Path) -> None:
    # console's release tag is its version tag v1.0.0, at S with no pins: its artifact must be
    # the one the manifest records. The others were versioned v0.9.0, so they get new tags.
    recorded = "sha256:" + "ab" * 32
    s = ReleaseSystem.create(tmp_path, digests={"console": recorded}, versions={
        "base": "v0.9.0", "platform": "v0.9.0", "chart": "v0.9.0"})
    built = build_artifact(s.remotes["console"], "v1.0.0", "v1.0.0", ArtifactHook(
        repository="demo/console", layout_root=s.layout, tag_transform="strip-v"))
    before = _refs(s)
    proc = s.cli("release", "cut", "--version", "v1.0.0", "--json")
    assert proc.returncode == 1, proc.stderr
    status = {c["component"]: c for c in json.loads(proc.stdout)["components"]}
    assert {n: c["state"] for n, c in status.items()} == {
        "console": "failed", "base": "done", "platform": "blocked", "chart": "blocked"}
    error = str(status["console"]["error"])
    assert error.startswith("DigestMismatchError: "), error
    assert built.digest in error and recorded in error
    for name in ("console", "platform", "chart"):
        assert _refs(s)[name] == before[name], f"{name} changed"


# -- R20: Ctrl-C during a wait -------------------------------------------------------------

def test_ctrl_c_during_a_wait_exits_130_at_once_and_the_rerun_finishes(tmp_path: Path) -> None:
    s = ReleaseSystem.create(tmp_path, gated=True)
    counts = {n: s.commit_count(n) for n in s.remotes}
    proc = _start(s)
    _until(_waiting(s, "console", "base"), "both waits", proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert elapsed < 1.0, f"exit {elapsed:.2f}s after SIGINT"
    assert "interrupted; rerun to resume" in err
    shown = _status(s)
    assert {n: c["state"] for n, c in shown.items()} == {
        "console": "waiting", "base": "waiting", "platform": "pending", "chart": "pending"}

    _open_gates(s)
    s.cli("release", "cut", check=True)
    assert {c["state"] for c in _status(s).values()} == {"done"}
    rows = _rows(s)
    assert [rows.count((n, "push", "started")) for n in s.remotes] == [1, 1, 1, 1]
    for name in ("platform", "chart"):
        assert s.commit_count(name) == counts[name] + 1, f"{name}: a duplicate pin commit"


# -- the lock ------------------------------------------------------------------------------

def test_a_second_cut_is_busy_and_a_killed_holders_lock_is_taken_over(tmp_path: Path) -> None:
    s = ReleaseSystem.create(tmp_path, gated=True)
    first = _start(s)
    try:
        _until(_waiting(s, "console", "base"), "the first run's waits", first)
        second = s.cli("release", "cut")
        assert second.returncode == 1, second.stderr
        _one_error(second.stderr, "ReleaseBusyError", f"pid {first.pid}",
                   f"on {socket.gethostname()}")
        assert first.poll() is None, "the busy run disturbed the running one"
    finally:
        first.kill()
        first.communicate()
    _open_gates(s)
    started = time.monotonic()
    s.cli("release", "cut", check=True)
    assert time.monotonic() - started < 30, "waited for the dead holder's lease"
    assert {c["state"] for c in _status(s).values()} == {"done"}


# -- --fail-fast -----------------------------------------------------------------------------

def test_fail_fast_ends_the_other_waits_and_starts_nothing_new(tmp_path: Path) -> None:
    """console fails at once (its digest is not the manifest's) while base's artifact is held
    back: with --fail-fast base's wait ends instead of running to its 60 s timeout."""
    s = ReleaseSystem.create(tmp_path, gated={"base"}, digests={"console": "sha256:" + "ab" * 32},
                             versions={"base": "v0.9.0", "platform": "v0.9.0",
                                       "chart": "v0.9.0"})
    build_artifact(s.remotes["console"], "v1.0.0", "v1.0.0", ArtifactHook(
        repository="demo/console", layout_root=s.layout, tag_transform="strip-v"))
    started = time.monotonic()
    # --jobs 1: base does all its git work and is waiting before console (next by name) starts.
    proc = s.cli("release", "cut", "--version", "v1.0.0", "--fail-fast", "--jobs", "1", "--json")
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - started < 30, "base's wait was not ended"
    status = {c["component"]: c for c in json.loads(proc.stdout)["components"]}
    assert status["console"]["state"] == "failed"
    assert (status["base"]["step"], status["base"]["state"]) == ("wait", "waiting")
    assert status["platform"]["state"] == "blocked" and status["chart"]["state"] == "blocked"
    assert s.remote_tag("platform", "v1.0.0") is None and s.remote_tag("chart", "v1.0.0") is None
    _open_gates(s)  # let base's held-back CI job finish rather than linger for its 600 s

"""`manifest validate` (with and without --remote), pin checks against real component remotes,
and the local checkout's drift from the integration branch, on real sample systems."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lockstep.cli.main import run
from lockstep.errors import GitError
from lockstep.manifest import Pin
from lockstep.workspace import checkout_drift
from tests.system import System, sh


def invoke(system: System, argv: list[str],
           capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        run([*argv, "-C", str(system.ws_dir)])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def set_pin(system: System, configuration: str, component: str, version: str, sha: str) -> None:
    """Hand-edit one pin of the working manifest."""
    path = system.ws_dir / "manifest.toml"
    pattern = re.compile(
        rf"(\[configurations\.{configuration}\][^\[]*?^{component} = )\{{[^}}]*\}}", re.M | re.S)
    text, n = pattern.subn(lambda m: f'{m.group(1)}{{ version = "{version}", sha = "{sha}" }}',
                           path.read_text())
    assert n == 1
    path.write_text(text)


def component_remote(system: System, name: str) -> Path:
    return system.root / "remotes" / f"{name}.git"


# --- stage coverage ----------------------------------------------------------------------------


def test_a_sound_system_validates(system: System, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(system, ["manifest", "validate"], capsys)
    assert (code, err) == (0, "")
    assert out == "ok: 3 components, 2 configurations, 3 stages\n"


def test_no_stages_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    system = System.create(tmp_path, stages=())
    code, out, err = invoke(system, ["manifest", "validate"], capsys)
    assert (code, out) == (2, "")
    assert err == ("error: lockstep.toml: no [[stages]] declared, so bumps to configurations "
                   "'default', 'edge' would land untested (add a [[stages]] entry that tests "
                   "the manifest)\n")


def test_a_configuration_no_stage_runs_for_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    system = System.create(tmp_path, stage_options='configurations = ["default"]')
    code, _, err = invoke(system, ["manifest", "validate"], capsys)
    assert code == 2
    assert err.startswith("error: lockstep.toml: no stage runs for configuration 'edge': ")
    assert err.endswith("(add 'edge' to a stage's configurations, or drop a stage's "
                        "restriction)\n")


def test_a_stage_naming_a_missing_configuration_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    system = System.create(tmp_path, stage_options='configurations = ["defualt", "edge"]')
    code, _, err = invoke(system, ["manifest", "validate"], capsys)
    assert code == 2
    assert err == ("error: lockstep.toml: stages.0.configurations.0: stage 'build' names "
                   "configuration 'defualt', which the manifest does not have (did you mean "
                   "'default'? the manifest has: default, edge)\n")


# --- webhook secrets ---------------------------------------------------------------------------

HOOK = ('[[notifiers]]\nname = "owners"\ntype = "webhook"\nurl = "https://hooks.example.com/x"\n'
        'secret_env = "LOCKSTEP_TEST_HOOK_SECRET"\n')


def test_an_unset_webhook_secret_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    system = System.create(tmp_path, extra_config=HOOK)
    monkeypatch.delenv("LOCKSTEP_TEST_HOOK_SECRET", raising=False)
    code, out, err = invoke(system, ["manifest", "validate"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("error: lockstep.toml: notifier 'owners' signs with "
                          "$LOCKSTEP_TEST_HOOK_SECRET, which is not set (1 problem(s); export")
    monkeypatch.setenv("LOCKSTEP_TEST_HOOK_SECRET", "k")
    code, out, _ = invoke(system, ["manifest", "validate"], capsys)
    assert code == 0 and out.startswith("ok: ")


def test_a_committed_secret_is_warned_about(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    inline = HOOK.replace('secret_env = "LOCKSTEP_TEST_HOOK_SECRET"', 'secret = "hunter2"')
    system = System.create(tmp_path, extra_config=inline)
    code, out, err = invoke(system, ["manifest", "validate"], capsys)
    assert code == 0 and out.startswith("ok: ")
    assert err == ("warning: notifier 'owners' has its secret written in lockstep.toml, so it is "
                   "in git and every stage can read it; move it to an environment variable "
                   "named by secret_env\n")
    assert "hunter2" not in err


def test_queue_run_reports_an_unset_secret_when_it_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = System.create(tmp_path, extra_config=HOOK)
    monkeypatch.delenv("LOCKSTEP_TEST_HOOK_SECRET", raising=False)
    result = system.cli("queue", "run", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("warning: notifier 'owners' signs with $LOCKSTEP_TEST_HOOK_SECRET, "
                             "which is not set\n")


# --- --remote: pins against the component repositories ----------------------------------------


def test_remote_validation_of_sound_pins(system: System,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(system, ["manifest", "validate", "--remote"], capsys)
    assert (code, err) == (0, "")
    assert out == ("ok: 3 components, 2 configurations, 3 stages; 6 pins checked against the "
                   "component repositories\n")


def test_remote_validation_finds_a_commit_the_component_does_not_have(
        system: System, capsys: pytest.CaptureFixture[str]) -> None:
    ghost = "0123456789abcdef" * 2 + "01234567"
    set_pin(system, "edge", "beta", "v1.0.0", ghost)
    code, out, _ = invoke(system, ["manifest", "validate"], capsys)
    assert code == 0, "the local check does not look at the component"
    code, out, err = invoke(system, ["manifest", "validate", "--remote"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: manifest.toml: configuration 'edge' pins beta v1.0.0 at "
                          f"{ghost}: commit {ghost} does not exist in component 'beta' (no tag "
                          "or branch of it contains that commit) (1 problem(s); ")
    assert err.count("\n") == 1


def test_remote_validation_counts_every_problem(system: System,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    set_pin(system, "default", "alpha", "v1.0.0", "1" * 40)
    set_pin(system, "edge", "gamma", "v1.0.0", "2" * 40)
    code, _, err = invoke(system, ["manifest", "validate", "--remote"], capsys)
    assert code == 2
    assert "configuration 'default' pins alpha" in err and "(2 problem(s); " in err


def test_remote_validation_finds_a_moved_tag(system: System,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    pinned = system.shas[("alpha", "v1.0.0")]
    moved = system.publish("alpha", "v1.0.0", force=True, content="retagged")
    code, _, err = invoke(system, ["manifest", "validate", "--remote"], capsys)
    assert code == 2
    assert (f"configuration 'default' pins alpha v1.0.0 at {pinned}: tag 'v1.0.0' of component "
            f"'alpha' was moved: it names {moved}, not the pinned {pinned}") in err


def test_remote_validation_finds_a_deleted_tag(system: System,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    sh(["tag", "-d", "v1.0.0"], component_remote(system, "gamma"))
    code, _, err = invoke(system, ["manifest", "validate", "--remote"], capsys)
    assert code == 2
    assert "pins gamma v1.0.0 at " in err
    assert "tag 'v1.0.0' of component 'gamma' was deleted" in err


def test_remote_validation_sees_a_commit_force_pushed_away_that_the_mirror_still_has(
        system: System, capsys: pytest.CaptureFixture[str]) -> None:
    newest = system.shas[("beta", "v1.3.0")]
    set_pin(system, "edge", "beta", "v1.3.0", newest)
    code, _, err = invoke(system, ["manifest", "validate", "--remote"], capsys)
    assert code == 0, err
    assert system.workspace().components.has_commit("beta", newest)  # now in the mirror
    remote = component_remote(system, "beta")
    sh(["tag", "-d", "v1.3.0"], remote)
    sh(["update-ref", "refs/heads/main", system.shas[("beta", "v1.2.0")]], remote)
    assert system.workspace().components.has_commit("beta", newest), "still in the mirror"
    code, _, err = invoke(system, ["manifest", "validate", "--remote"], capsys)
    assert code == 2
    assert f"commit {newest} does not exist in component 'beta'" in err


def test_an_unreachable_component_is_a_failure_with_gits_cause(
        system: System, capsys: pytest.CaptureFixture[str]) -> None:
    config = system.ws_dir / "lockstep.toml"
    config.write_text(config.read_text().replace("../remotes/beta.git", "../remotes/gone.git"))
    code, _, err = invoke(system, ["manifest", "validate", "--remote"], capsys)
    assert code == 1
    gone = system.root / "remotes" / "gone.git"
    # One line per URL tried, as git said it, then the hint (release.md §4.2's format).
    assert err.startswith(f"error: TransportError: cannot list the refs of beta\n  {gone}: "
                          f"fatal: '{gone}' does not appear to be a git repository\n  (check the "
                          "URLs")
    assert "and the repository exists" not in err


# --- ComponentMirrors.has_commit / check_pin -----------------------------------------------------


def test_has_commit(system: System) -> None:
    mirrors = system.workspace().components
    assert mirrors.has_commit("alpha", system.shas[("alpha", "v1.2.0")])  # fetched
    assert mirrors.has_commit("alpha", system.shas[("alpha", "v1.2.0")])  # known
    assert not mirrors.has_commit("alpha", "3" * 40)
    assert not mirrors.has_commit("alpha", system.shas[("beta", "v1.0.0")])  # another repo's


def test_has_commit_raises_when_the_component_is_unreachable(system: System) -> None:
    config = system.ws_dir / "lockstep.toml"
    config.write_text(config.read_text().replace("../remotes/alpha.git", "../remotes/gone.git"))
    with pytest.raises(GitError) as exc:
        system.workspace().components.has_commit("alpha", "3" * 40)
    assert "does not appear to be a git repository" in exc.value.message


def test_check_pin(system: System) -> None:
    mirrors = system.workspace().components
    sound = Pin("v1.1.0", system.shas[("gamma", "v1.1.0")])
    assert mirrors.check_pin("gamma", sound) is None
    wrong_tag = Pin("v1.2.0", system.shas[("gamma", "v1.1.0")])
    assert mirrors.check_pin("gamma", wrong_tag) == (
        f"tag 'v1.2.0' of component 'gamma' was moved: it names "
        f"{system.shas[('gamma', 'v1.2.0')]}, not the pinned {sound.sha}")


# --- the local checkout's drift ------------------------------------------------------------------


def push_from_elsewhere(system: System, tmp_path: Path) -> None:
    """Someone else lands a commit on the integration remote; the checkout fetches it."""
    system.commit_elsewhere(lambda clone: (clone / "README").write_text("x\n"), "elsewhere")
    sh(["fetch", "--quiet", "origin"], system.ws_dir)


def test_a_clean_checkout_has_no_drift(system: System,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert checkout_drift(system.workspace()) is None
    code, out, err = invoke(system, ["manifest", "show"], capsys)
    assert (code, err) == (0, "") and "configuration default" in out


def test_a_checkout_behind_its_remote_is_reported_by_manifest_show(
        system: System, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    push_from_elsewhere(system, tmp_path)
    assert checkout_drift(system.workspace()) == "the checkout is 1 commit behind origin/main"
    code, out, err = invoke(system, ["manifest", "show", "--json"], capsys)
    assert code == 0 and out.startswith("{")
    assert err == ("warning: the checkout is 1 commit behind origin/main; showing the work tree "
                   "(to follow origin/main: commit or stash local edits, check out main, then "
                   "`git pull --ff-only` (a diverged branch needs a rebase or reset); or pass "
                   "--ref origin/main)\n")
    code, _, err = invoke(system, ["manifest", "show", "--ref", "origin/main"], capsys)
    assert (code, err) == (0, "")


def test_local_edits_and_divergence_are_reported_together(
        system: System, tmp_path: Path) -> None:
    push_from_elsewhere(system, tmp_path)
    (system.ws_dir / "notes").write_text("local\n")
    sh(["add", "notes"], system.ws_dir)
    sh(["commit", "--quiet", "-m", "local"], system.ws_dir)
    manifest = system.ws_dir / "manifest.toml"
    manifest.write_text(manifest.read_text() + "# edited\n")
    assert checkout_drift(system.workspace()) == (
        "the checkout has diverged from origin/main (1 commit ahead, 1 behind) and has local "
        "edits to manifest.toml")


def test_another_branch_is_reported(system: System) -> None:
    sh(["checkout", "--quiet", "-b", "experiment"], system.ws_dir)
    assert checkout_drift(system.workspace()) == (
        "the checkout is on branch 'experiment', not 'main'")
    sh(["checkout", "--quiet", "--detach"], system.ws_dir)
    assert checkout_drift(system.workspace()) == "the checkout is on a detached HEAD, not main"

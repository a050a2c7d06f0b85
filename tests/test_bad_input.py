"""Bad input: each exits 2 with one clear line on stderr and changes no state."""

from __future__ import annotations

import ast
import hashlib
import re
import sqlite3
from pathlib import Path

import pytest

from lockstep.cli.main import run
from tests.system import System, sh


def snapshot(system: System) -> tuple[object, ...]:
    """Everything that counts as state: remote and local refs, work tree files, the store."""
    db = system.ws_dir / ".lockstep" / "queue.db"
    rows: object = None
    if db.exists():
        with sqlite3.connect(db) as conn:
            rows = (conn.execute("SELECT * FROM items").fetchall(),
                    conn.execute("SELECT * FROM queues").fetchall(),
                    conn.execute("SELECT count(*) FROM runs").fetchall())
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in system.ws_dir.iterdir() if p.is_file()}
    return (sh(["for-each-ref"], system.remote), sh(["for-each-ref"], system.ws_dir), files, rows)


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        run(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture
def ready(system: System, monkeypatch: pytest.MonkeyPatch,
          capsys: pytest.CaptureFixture[str]) -> System:
    monkeypatch.chdir(system.ws_dir)
    code, _, err = invoke(["queue", "status"], capsys)
    assert code == 0, err
    return system


CONFIG_CASES = {
    "toml-syntax": ("[integration\nremote = 'origin'\n", "not valid TOML"),
    "unknown-key": ("[integration]\nremot = 'origin'\n", "unknown key"),
    "stage-no-command": ("[[stages]]\nname = 'build'\ncommand = []\ntimeout = 5\n",
                         "needs a command"),
    "stage-missing-command": ("[[stages]]\nname = 'build'\ntimeout = 5\n", "command"),
    "negative-timeout": ("[[stages]]\nname = 'build'\ncommand = ['true']\ntimeout = -5\n",
                         "positive"),
    "ext-url": ("[components.alpha]\nurl = 'ext::sh -c touch% /tmp/pwned'\n", "ext::"),
    "unknown-dependency": ("[components.alpha]\nurl = 'a.git'\ndepends_on = ['zeta']\n",
                           "unknown component 'zeta'"),
    "tag-format-without-n": ("[integration]\ntag_format = 'release-{year}'\n", "{n}"),
    "bad-component-name": ("[components.'Alpha Beta']\nurl = 'a.git'\n", "component name"),
    "duplicate-stage": ("[[stages]]\nname = 'a'\ncommand = ['true']\ntimeout = 1\n"
                        "[[stages]]\nname = 'a'\ncommand = ['true']\ntimeout = 1\n",
                        "declared twice"),
    "webhook-not-http": ("[[notifiers]]\nname = 'hook'\ntype = 'webhook'\nurl = 'file:///etc/passwd'\n"
                         "secret = 'x'\n", "http"),
    "webhook-without-secret": ("[[notifiers]]\nname = 'hook'\ntype = 'webhook'\nurl = 'http://127.0.0.1/'\n",
                               "secret"),
    "misspelt-key": ("[[stages]]\nname = 'build'\ncommand = ['true']\ntimout = 5\n",
                     "stages.0.timout: unknown key (did you mean 'timeout'?)"),
    "duplicate-notifier": ("[[notifiers]]\nname = 'ops'\ntype = 'command'\ncommand = ['true']\n"
                           "[[notifiers]]\nname = 'ops'\ntype = 'command'\ncommand = ['true']\n",
                           "notifiers.1.name: notifier 'ops' is declared twice (also notifiers.0)"),
    "notifier-without-name": ("[[notifiers]]\ntype = 'command'\ncommand = ['true']\n",
                              "notifiers.0.name: required key is missing"),
    "bad-pass-env": ("[queue]\npass_env = ['A B']\n", "queue.pass_env: entry 0"),
}
ONE_LINE_WITH_HINT = re.compile(r"error: .+ \(.+\)\n")


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config(ready: System, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    text, needle = CONFIG_CASES[case]
    (ready.ws_dir / "lockstep.toml").write_text(text)
    before = snapshot(ready)
    code, out, err = invoke(["queue", "submit", "alpha", "v1.1.0"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: lockstep.toml"), err
    assert ONE_LINE_WITH_HINT.fullmatch(err), err
    assert needle in err
    assert out == ""
    assert snapshot(ready) == before


ARG_CASES = {
    "unknown-component": (["queue", "submit", "zeta", "v1.1.0"], "unknown component 'zeta'"),
    "path-component": (["queue", "submit", "../alpha", "v1.1.0"], "invalid component name"),
    "nonexistent-tag": (["queue", "submit", "alpha", "v9.9.9"], "has no tag 'v9.9.9'"),
    "version-with-space": (["queue", "submit", "alpha", "v1 .1.0"], "whitespace"),
    "version-dotdot": (["queue", "submit", "alpha", "v1..0"], "'..'"),
    "version-leading-dash": (["queue", "submit", "alpha", "--", "-v1.1.0"], "starts with '-'"),
    "version-shell-semicolon": (["queue", "submit", "alpha", "v1;rm -rf ~"], "invalid version"),
    "version-command-subst": (["queue", "submit", "alpha", "$(touch pwned)"],
                              "invalid version"),
    "version-backtick": (["queue", "submit", "alpha", "`id`"], "invalid version"),
    "version-empty": (["queue", "submit", "alpha", ""], "empty"),
    "unknown-configuration": (["queue", "submit", "alpha", "v1.1.0", "--config", "nope"],
                              "unknown configuration 'nope'"),
    "bad-configuration-name": (["queue", "submit", "alpha", "v1.1.0", "--config", "a b"],
                               "invalid configuration name"),
    "priority-out-of-range": (["queue", "submit", "alpha", "v1.1.0", "--priority", "99999"],
                              "out of range"),
    "priority-not-a-number": (["queue", "submit", "alpha", "v1.1.0", "--priority", "high"],
                              "priority"),
    "unknown-item": (["queue", "show", "q999"], "no item q999"),
    "malformed-item": (["queue", "show", "q1;ls"], "invalid item id"),
    "cancel-unknown-item": (["queue", "cancel", "q42"], "no item q42"),
    "logs-unknown-item": (["queue", "logs", "q7"], "no item q7"),
    "diff-unknown-ref": (["manifest", "diff", "v0.0.0", "HEAD"], "no commit or tag 'v0.0.0'"),
    "diff-option-as-ref": (["manifest", "diff", "--", "--output=/tmp/x", "HEAD"],
                           "invalid revision"),
    "show-unknown-configuration": (["manifest", "show", "--config", "nope"],
                                   "unknown configuration 'nope'"),
    "run-conflicting-modes": (["queue", "run", "--once", "--forever"], "exclude each other"),
    "unknown-option": (["queue", "status", "--bogus"], "--bogus"),
    "unknown-command": (["queue", "frobnicate"], "frobnicate"),
    "init-existing": (["init", "."], "already exists"),
    "missing-workspace": (["queue", "status", "-C", "/nonexistent/dir"], "does not exist"),
}


@pytest.mark.parametrize("case", sorted(ARG_CASES))
def test_bad_arguments(ready: System, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv, needle = ARG_CASES[case]
    before = snapshot(ready)
    code, out, err = invoke(argv, capsys)
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert ONE_LINE_WITH_HINT.fullmatch(err), err
    assert needle in err
    assert snapshot(ready) == before
    assert not Path("pwned").exists()


MANIFEST_CASES = {
    "invalid-sha": ('[configurations.default]\nalpha = { version = "v1.0.0", sha = "abc" }\n',
                    "configurations.default.alpha: invalid commit SHA 'abc' "
                    "(expected 40 lowercase hex digits)"),
    "invalid-version": ('[configurations.default]\nalpha = { version = "v1 0", sha = "' + "a" * 40
                        + '" }\n', "invalid version 'v1 0': it contains whitespace (use letters"),
    "not-a-table": ("[configurations]\ndefault = 3\n",
                    "configurations.default must be a table (write [configurations.default]"),
    "bad-pin": ('[configurations.default]\nalpha = "v1.0.0"\n',
                "(see docs/manifest.md for the format)"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_bad_manifest(ready: System, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    text, needle = MANIFEST_CASES[case]
    (ready.ws_dir / "manifest.toml").write_text(text)
    before = snapshot(ready)
    code, out, err = invoke(["manifest", "show"], capsys)
    assert (code, out) == (2, "")
    assert ONE_LINE_WITH_HINT.fullmatch(err), err
    assert needle in err
    assert snapshot(ready) == before


def test_a_tag_that_names_no_commit(ready: System, capsys: pytest.CaptureFixture[str]) -> None:
    src = ready.sources["alpha"]
    sh(["tag", "v9-tree", "HEAD^{tree}"], src)
    sh(["push", "--quiet", "origin", "refs/tags/v9-tree"], src)
    before = snapshot(ready)
    code, out, err = invoke(["queue", "submit", "alpha", "v9-tree"], capsys)
    assert (code, out) == (2, "")
    assert err == ("error: tag 'v9-tree' of component 'alpha' names no commit (a version must be "
                   "a tag of a commit (not of a tree or blob); tag a commit)\n")
    assert snapshot(ready) == before


USAGE_ERRORS = {"UsageError", "ConfigError", "ValidationError", "NotFoundError"}
SRC = Path(__file__).resolve().parents[1] / "src"


def _error_class(call: ast.Call) -> str | None:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    return name if name in USAGE_ERRORS else None


def _has_hint(call: ast.Call) -> bool:
    hints = [k.value for k in call.keywords if k.arg == "hint"] + call.args[1:2]
    return bool(hints) and not (
        isinstance(hints[0], ast.Constant) and hints[0].value in (None, ""))


def test_every_exit_2_error_in_the_source_carries_a_hint() -> None:
    """Each UsageError, ConfigError, ValidationError and NotFoundError built in src/ is given a
    hint (how to fix it), so the one-line error always reads `error: <what> (<how to fix>)`."""
    missing = []
    calls = 0
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _error_class(node):
                calls += 1
                if not _has_hint(node):
                    missing.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert calls > 30  # the scan does see the errors
    assert missing == []

"""lockstep.names: every name that reaches git, the filesystem or a process is checked first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lockstep import names
from lockstep.errors import EXIT_USAGE, UsageError, ValidationError
from tests.system import System

SHELL_METACHARACTERS = list(";|&$`()<>*")


# --- component and configuration names ---------------------------------------------------------

VALID_COMPONENT_NAMES = ["alpha", "a", "0", "a1", "my-comp", "my_comp", "x.y", "v2.api-9", "a" * 64]
INVALID_COMPONENT_NAMES = [
    "",
    "A",
    "Alpha",
    "-alpha",
    "alpha-",
    ".alpha",
    "alpha.",
    "_alpha",
    "alpha_",
    "a..b",
    "a b",
    " alpha",
    "alpha ",
    "a/b",
    "a\\b",
    "a:b",
    "a@b",
    "a\tb",
    "a\x00b",
    "café",
    "a" * 65,
    *[f"a{c}b" for c in SHELL_METACHARACTERS],
]


@pytest.mark.parametrize("name", VALID_COMPONENT_NAMES)
@pytest.mark.parametrize("check", [names.component_name, names.configuration_name])
def test_valid_component_and_configuration_names_are_returned_unchanged(
    check: Callable[[str], str], name: str
) -> None:
    assert check(name) == name


@pytest.mark.parametrize("name", INVALID_COMPONENT_NAMES)
@pytest.mark.parametrize(
    ("check", "what"),
    [(names.component_name, "component name"), (names.configuration_name, "configuration name")],
)
def test_invalid_component_and_configuration_names_are_refused(
    check: Callable[[str], str], what: str, name: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        check(name)
    assert f"invalid {what}" in exc.value.message
    assert repr(name) in exc.value.message
    assert exc.value.hint  # says what is allowed


def test_validation_errors_are_usage_errors_with_exit_code_2() -> None:
    with pytest.raises(UsageError) as exc:
        names.component_name("Bad Name")
    assert exc.value.exit_code == EXIT_USAGE
    assert "\n" not in exc.value.one_line()


# --- versions and ref names --------------------------------------------------------------------

VALID_REFS = [
    "v1.0.0",
    "v2026.11.3",
    "1.2.3",
    "release/1.2",
    "feature/a/b",
    "v1.0.0+build.5",
    "v1.0.0-rc.1",
    "a_b-c",
    "main",
    "x" * 200,
    "api@1.2.3",  # the monorepo form
    "tools/cli@2.0.0-rc.1",
    "@scope/pkg@1.0.0",
]
INVALID_REFS = {
    "empty": "",
    "space-inside": "v1 .0",
    "leading-space": " v1.0",
    "trailing-space": "v1.0 ",
    "tab": "v1\t0",
    "newline": "v1.0\n",
    "dot-dot": "v1..0",
    "only-dot-dot": "..",
    "leading-dash": "-v1.0",
    "option-like": "--upload-pack=evil",
    "reflog-syntax": "v1@{1}",
    "at-brace-alone": "@{u}",
    "lone-at": "@",
    "at-brace-after-version": "api@1.2.3@{0}",
    "lock-suffix": "v1.0.lock",
    "lock-suffix-in-component": "release.lock/v1",
    "trailing-slash": "release/",
    "leading-slash": "/release",
    "double-slash": "release//v1",
    "leading-dot": ".v1",
    "trailing-dot": "v1.",
    "component-leading-dot": "release/.v1",
    "nul": "v1\x00",
    "bell": "v1\x07",
    "escape": "v1\x1b[31m",
    "delete": "v1\x7f",
    "tilde": "v1~1",
    "caret": "v1^0",
    "colon": "v1:x",
    "question": "v1?",
    "bracket": "v1[0]",
    "backslash": "v1\\0",
    "quote": "v1'0",
    "double-quote": 'v1"0',
    "non-ascii": "v1.0ü",
    "too-long": "x" * 201,
    **{f"shell-{c}": f"v1{c}0" for c in SHELL_METACHARACTERS},
}


@pytest.mark.parametrize("ref", VALID_REFS)
def test_valid_ref_names_and_versions(ref: str) -> None:
    assert names.ref_name(ref) == ref
    assert names.version(ref) == ref


@pytest.mark.parametrize("ref", INVALID_REFS.values(), ids=INVALID_REFS.keys())
def test_invalid_ref_names_are_refused(ref: str) -> None:
    with pytest.raises(ValidationError) as exc:
        names.ref_name(ref)
    # the name, then the reason it was refused
    assert exc.value.message.startswith(f"invalid ref name {ref!r}: ")


@pytest.mark.parametrize("ref", INVALID_REFS.values(), ids=INVALID_REFS.keys())
def test_invalid_versions_are_refused_and_called_versions(ref: str) -> None:
    with pytest.raises(ValidationError) as exc:
        names.version(ref)
    assert exc.value.message.startswith("invalid version ")


def test_ref_name_error_names_what_was_checked_and_why() -> None:
    with pytest.raises(ValidationError) as exc:
        names.ref_name("-x", "tag name")
    assert exc.value.message == "invalid tag name '-x': it starts with '-'"
    with pytest.raises(ValidationError) as exc:
        names.ref_name("a b")
    assert "whitespace" in exc.value.message
    with pytest.raises(ValidationError) as exc:
        names.ref_name("x" * 201)
    assert "longer than 200" in exc.value.message


def test_lone_at_is_refused_because_git_reads_it_as_head() -> None:
    with pytest.raises(ValidationError) as exc:
        names.version("@")
    assert exc.value.message == "invalid version '@': git reserves '@' alone for HEAD"
    assert "api@1.4.2" in (exc.value.hint or "")


def test_notifier_names() -> None:
    assert names.notifier_name("team-api.hook_1") == "team-api.hook_1"
    for bad in ("", "Team", "a b", "-a", "a/b", "a..b"):
        with pytest.raises(ValidationError) as exc:
            names.notifier_name(bad)
        assert exc.value.message == f"invalid notifier name {bad!r}"


def test_ref_name_length_limit_is_exactly_200() -> None:
    assert names.ref_name("v" * 200) == "v" * 200
    with pytest.raises(ValidationError):
        names.ref_name("v" * 201)


# --- item ids and SHAs -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["q0", "q1", "q12", "q007", "q" + "9" * 30])
def test_valid_item_ids(value: str) -> None:
    assert names.item_id(value) == value


@pytest.mark.parametrize(
    "value", ["", "q", "12", "Q12", "q-1", "q1a", "q 1", " q1", "q1 ", "qq1", "q1.0", "q½", "q١"]
)
def test_invalid_item_ids(value: str) -> None:
    with pytest.raises(ValidationError) as exc:
        names.item_id(value)
    assert exc.value.hint == "item ids look like q12"


@pytest.mark.parametrize("value", ["0" * 40, "a" * 40, "0123456789abcdef0123456789abcdef01234567"])
def test_valid_shas(value: str) -> None:
    assert names.sha(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 39,
        "a" * 41,
        "A" * 40,
        "0123456789ABCDEF0123456789abcdef01234567",
        "g" * 40,
        " " + "a" * 39,
        "a" * 64,  # sha256 repositories are not supported here
        "HEAD",
        "-" + "a" * 39,
    ],
)
def test_invalid_shas(value: str) -> None:
    with pytest.raises(ValidationError) as exc:
        names.sha(value)
    assert "40 lowercase hex digits" in (exc.value.hint or "")


TRAILING_NEWLINE_BUG = (
    "names uses re.match with a '$' anchor, and '$' also matches before a trailing newline, so "
    "a value ending in '\\n' passes (should use re.fullmatch or '\\Z')"
)


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (names.component_name, "alpha\n"),
        (names.configuration_name, "default\n"),
        (names.item_id, "q12\n"),
        (names.sha, "a" * 40 + "\n"),
    ],
    ids=["component", "configuration", "item", "sha"],
)
def test_trailing_newline_is_refused(check: Callable[[str], str], value: str) -> None:
    with pytest.raises(ValidationError):
        check(value)


# --- relative paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["manifest.toml", "deploy/manifest.toml", "a-b/c_d.toml", "x", "dir/sub/file.txt"]
)
def test_valid_relative_paths(value: str) -> None:
    assert names.relative_path(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "/etc/passwd",
        "/",
        "..",
        "../manifest.toml",
        "a/../../b",
        "a/..",
        "a\\b",
        "..\\manifest.toml",
        "-manifest.toml",
        "--output=/tmp/x",
        "a\x00b",
    ],
)
def test_invalid_relative_paths(value: str) -> None:
    with pytest.raises(ValidationError) as exc:
        names.relative_path(value, "manifest path")
    assert exc.value.message.startswith("invalid manifest path ")


# --- end to end: a monorepo tag is submitted, tested and landed --------------------------------


def test_a_monorepo_version_tag_lands(tmp_path: Path) -> None:
    system = System.create(tmp_path, stages=("build",), configurations=("default",))
    sha = system.publish("alpha", "alpha@1.4.0")
    item = system.submit("alpha", "alpha@1.4.0")
    assert (item.version, item.sha) == ("alpha@1.4.0", sha)
    report = system.run_queue()
    assert report.landed == [item.id]
    assert system.manifest_at("main")["default"]["alpha"] == {"version": "alpha@1.4.0",
                                                              "sha": sha}

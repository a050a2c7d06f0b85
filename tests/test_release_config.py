"""The release tables of lockstep.toml: every bad value is one ConfigError naming its key."""

from __future__ import annotations

import pytest

from lockstep import config
from lockstep.errors import ConfigError, ValidationError
from lockstep.release_config import PatternTransform, duration, transform_tag

BASE = """
[components.console]
url = "https://git.example.com/acme/console.git"
ssh_url = "ssh://git@git.example.com/acme/console.git"
image = "registry.example.com/materialize/console"
tag_transform = "strip-v"
[components.platform]
url = "https://git.example.com/acme/platform.git"
depends_on = ["console"]
image = "registry.example.com/materialize/environmentd"
branch = "main"
[release]
tag = "{version}"
wait_timeout = "5m"
poll = { initial = "250ms", max = "2s" }
notifications = { listen = "127.0.0.1:5081", path = "/events/", token_env = "HOOK_TOKEN" }
[registries."registry.example.com"]
username_env = "REG_USER"
password_env = "REG_PASS"
[git."git.example.com"]
username_env = "GIT_USER"
password_env = "GIT_TOKEN"
"""

PIN = """
[[pins]]
repo = "platform"
component = "console"
file = "misc/images/materialized-base/Dockerfile"
kind = "dockerfile"
image = "materialize/console"
"""


def test_the_spec_example_parses_with_its_defaults() -> None:
    cfg = config.parse(BASE + PIN)
    assert cfg.release.wait_timeout == 300.0
    assert (cfg.release.poll.initial, cfg.release.poll.max) == (0.25, 2.0)
    assert cfg.release.notifications is not None
    assert cfg.release.notifications.path == "/events"
    assert cfg.release.jobs == 8 and cfg.release.git_timeout.lookup == 30.0
    console = cfg.components["console"]
    assert [a.image for a in console.artifacts] == ["registry.example.com/materialize/console"]
    assert console.artifacts[0].tag_transform == "strip-v"
    assert cfg.components["platform"].branch == "main"
    assert config.pin_artifact(cfg, cfg.pins[0]).image.endswith("materialize/console")


@pytest.mark.parametrize(("extra", "key", "words"), [
    ('[release]\ntag = "{release}"\n', "release.tag", "known fields"),
    ('[release]\ntag = "v{version}..x"\n', "release.tag", "invalid"),
    ('[release]\nwait_timeout = "soon"\n', "release.wait_timeout", "not a duration"),
    ('[release]\njobs = 0\n', "release.jobs", "greater than or equal to 1"),
    ('[release]\nnotifications = { listen = "0.0.0.0:5081" }\n', "release.notifications",
     "token_env is required"),
    ('[registries.r]\nusername_env = "U"\n', "registries.r", "go together"),
    ('[registries.r]\nlayout = " "\n', "registries.r", "directory path"),
    ('[git.h]\npassword_env = "has space"\n', "git.h.password_env", "not an environment"),
    ('[components.x]\nurl = "https://u:pw@h.example/x.git"\n', "components.x.url",
     "holds a password"),
    ('[components.x]\nurl = "http://git.example.com/x.git"\n', "components.x.url",
     "plain http is allowed only to loopback"),
    ('[components.x]\nurl = "https://git.example.com/acme/console.git"\n', "components.x.url",
     "same URL as component 'console'"),
    ('[components.x]\nurl = "x.git"\nimage = "Foo/Bar"\n', "components.x.image", "invalid"),
    ('[components.x]\nurl = "x.git"\nimage = "a/b:1.0"\n', "components.x.image", "without tag"),
    ('[components.x]\nurl = "x.git"\nimage = "a/b"\nimages = [{ image = "a/c" }]\n',
     "components.x", "not both"),
    ('[components.x]\nurl = "x.git"\nbranch = "a..b"\n', "components.x.branch", "invalid"),
])
def test_bad_release_settings_are_one_line_errors(extra: str, key: str, words: str) -> None:
    base = BASE
    if extra.startswith("[release]"):
        start = BASE.index("[release]")
        base = BASE[:start] + BASE[BASE.index("[registries"):]
    with pytest.raises(ConfigError) as exc:
        config.parse(base + extra)
    line = exc.value.one_line()
    assert f"{key}" in line and words in line, line
    assert "\n" not in line


@pytest.mark.parametrize(("change", "words"), [
    ('repo = "nope"', "unknown component 'nope'"),
    ('file = "../Dockerfile"', "invalid pin file"),
    ('file = "a//Dockerfile"', "segment"),
    ('kind = "regex"', "needs `pattern`"),
    ('pattern = "x(.*)"', "only for kind = 'regex'"),
    ('image = "other/image"', "matches 0 of 'console'"),
    ('value = "{image_tag}"', "only for kinds 'regex' and 'chart'"),
])
def test_bad_pins_are_config_errors(change: str, words: str) -> None:
    key = change.split(" ")[0]
    lines = [line for line in PIN.splitlines() if not line.startswith(f"{key} ")]
    with pytest.raises(ConfigError) as exc:
        config.parse(BASE + "\n".join(lines) + f"\n{change}\n")
    assert words in exc.value.one_line()


def test_a_pin_needs_its_repo_to_depend_on_the_component() -> None:
    text = BASE.replace('depends_on = ["console"]\n', "") + PIN
    with pytest.raises(ConfigError, match="depends_on must list 'console'"):
        config.parse(text)


def test_a_regex_pin_needs_exactly_one_group() -> None:
    pin = PIN.replace('kind = "dockerfile"', 'kind = "regex"\npattern = "(a)(b)"')
    with pytest.raises(ConfigError, match="2 capture groups"):
        config.parse(BASE + pin)


def test_an_own_release_pin_cannot_use_the_digest() -> None:
    pin = ('[[pins]]\nrepo = "platform"\ncomponent = "platform"\nfile = "Chart.yaml"\n'
           'kind = "chart"\nvalue = "{tag}@{digest}"\n')
    with pytest.raises(ConfigError, match="own release cannot use"):
        config.parse(BASE + pin)


@pytest.mark.parametrize(("text", "seconds"), [
    ("60m", 3600.0), ("0.5s", 0.5), ("1h30m", 5400.0), ("250ms", 0.25), (7, 7.0), ("0", None),
])
def test_durations(text: object, seconds: float | None) -> None:
    if seconds is None:
        with pytest.raises(ValueError):
            duration(text)
    else:
        assert duration(text) == seconds


def test_tag_transforms() -> None:
    assert transform_tag("none", "v26.5.0") == "v26.5.0"
    assert transform_tag("strip-v", "v26.5.0") == "26.5.0"
    assert transform_tag("helm-oci", "1.2.3+build.4") == "1.2.3_build.4"
    assert transform_tag(PatternTransform(pattern=r"^release-(.+)$", replace=r"\1"),
                         "release-1.2") == "1.2"
    with pytest.raises(ValidationError, match="does not match"):
        transform_tag(PatternTransform(pattern=r"^release-(.+)$", replace=r"\1"), "v1")
    with pytest.raises(ValidationError, match="not a valid OCI tag"):
        transform_tag("none", "1.2.3+b")

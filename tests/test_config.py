"""lockstep.toml parsing: the expected model, one-line errors naming the key, secrets, defaults.

Also the webhook signature helpers (queue.notify.sign / verify), keyed by the resolved secret.
"""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from lockstep import config
from lockstep.config import CommandNotifier, WebhookNotifier
from lockstep.errors import (
    EXIT_USAGE,
    ConfigError,
    DependencyCycleError,
    NotFoundError,
    UsageError,
    ValidationError,
)
from lockstep.queue import notify

FULL = """\
# a complete lockstep.toml
[integration]
remote = "upstream"
branch = "release/2026"
manifest = "deploy/manifest.toml"
tag_format = "rel-{year}-{n}"

[identity]
name = "Release Bot"
email = "bot@example.com"

[queue]
mode = "serial"
max_recoveries = 5
infra_pause_after = 2
lease_ttl = 30
notify_attempts = 7
retry_backoff = 0.5
log_tail_lines = 20
kill_grace = 3

[components.db]
url = "../remotes/db.git"

[components.api]
url = "https://git.example.com/acme/api.git"
ssh_url = "ssh://git@git.example.com/acme/api.git"
image = "registry.example.com/acme/api"
depends_on = ["db"]
owners = ["team-api@example.com", "oncall@example.com"]

[[stages]]
name = "build"
command = ["make", "build"]
timeout = 600

[[stages]]
name = "integration"
command = ["./run-tests", "--fast"]
timeout = 12.5
retries = 0
infra_exit_code = 99
configurations = ["default", "edge"]

[[notifiers]]
name = "hooks"
type = "webhook"
url = "https://hooks.example.com/lockstep"
secret_env = "LOCKSTEP_TEST_WEBHOOK_SECRET"
events = ["rejected", "landed"]
timeout = 2

[[notifiers]]
name = "script"
type = "command"
command = ["./hooks/notify.sh", "--json"]
events = ["skipped", "cancelled"]
"""


def parse_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        config.parse(text)
    return exc.value


# --- a full valid file -------------------------------------------------------------------------


def test_full_config_gives_the_expected_model() -> None:
    cfg = config.parse(FULL)

    assert cfg.integration == config.Integration(
        remote="upstream",
        branch="release/2026",
        manifest="deploy/manifest.toml",
        tag_format="rel-{year}-{n}",
    )
    assert (cfg.identity.name, cfg.identity.email) == ("Release Bot", "bot@example.com")
    assert cfg.queue == config.QueueSettings(
        mode="serial",
        max_recoveries=5,
        infra_pause_after=2,
        lease_ttl=30.0,
        notify_attempts=7,
        retry_backoff=0.5,
        log_tail_lines=20,
        kill_grace=3.0,
    )

    assert list(cfg.components) == ["db", "api"]  # file order
    api = cfg.components["api"]
    assert api.url == "https://git.example.com/acme/api.git"
    assert api.ssh_url == "ssh://git@git.example.com/acme/api.git"
    assert api.image == "registry.example.com/acme/api"
    assert api.depends_on == ["db"]
    assert api.owners == ["team-api@example.com", "oncall@example.com"]
    db = cfg.components["db"]
    assert (db.url, db.ssh_url, db.image, db.depends_on, db.owners) == (
        "../remotes/db.git", None, None, [], []
    )

    assert [s.name for s in cfg.stages] == ["build", "integration"]  # declared order
    build, integration = cfg.stages
    assert build.command == ["make", "build"]
    assert build.timeout == 600.0
    assert (build.retries, build.infra_exit_code, build.configurations) == (2, 75, None)
    assert integration.command == ["./run-tests", "--fast"]
    assert integration.timeout == 12.5
    assert (integration.retries, integration.infra_exit_code) == (0, 99)
    assert integration.configurations == ["default", "edge"]

    webhook, command = cfg.notifiers
    assert isinstance(webhook, WebhookNotifier)
    assert webhook.url == "https://hooks.example.com/lockstep"
    assert webhook.secret is None
    assert webhook.secret_env == "LOCKSTEP_TEST_WEBHOOK_SECRET"
    assert webhook.events == ["rejected", "landed"]
    assert webhook.timeout == 2.0
    assert isinstance(command, CommandNotifier)
    assert command.command == ["./hooks/notify.sh", "--json"]
    assert command.events == ["skipped", "cancelled"]
    assert command.timeout == 30.0


def test_the_documented_example_parses() -> None:
    """The example in docs/config.md is a valid configuration."""
    doc = (Path(__file__).parent.parent / "docs" / "config.md").read_text(encoding="utf-8")
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    example = example.replace('depends_on = ["db"]', "depends_on = []")  # db is not declared there
    cfg = config.parse(example)
    assert list(cfg.components) == ["api"]
    assert [(s.name, s.kind) for s in cfg.stages] == [("integration", None), ("upgrade", "upgrade")]
    assert [n.type for n in cfg.notifiers] == ["webhook", "command"]


def test_config_is_immutable() -> None:
    cfg = config.parse(FULL)
    with pytest.raises(pydantic.ValidationError):
        cfg.integration.branch = "other"


def test_component_lookup() -> None:
    cfg = config.parse(FULL)
    assert cfg.component("api") is cfg.components["api"]
    with pytest.raises(NotFoundError) as exc:
        cfg.component("web")
    assert "unknown component 'web'" in exc.value.message
    assert exc.value.hint == "components in lockstep.toml: api, db"
    with pytest.raises(ValidationError):
        cfg.component("../web")


def test_component_lookup_with_no_components_says_none() -> None:
    with pytest.raises(NotFoundError) as exc:
        config.parse("").component("api")
    assert exc.value.hint == "components in lockstep.toml: none"


def test_load_reads_lockstep_toml_from_the_workspace(tmp_path: Path) -> None:
    (tmp_path / "lockstep.toml").write_text(FULL, encoding="utf-8")
    assert config.load(tmp_path) == config.parse(FULL)


def test_load_without_a_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        config.load(tmp_path)
    assert exc.value.message == f"no lockstep.toml in {tmp_path}"
    assert "lockstep init" in (exc.value.hint or "")


# --- defaults ----------------------------------------------------------------------------------


def test_empty_file_gives_all_defaults() -> None:
    cfg = config.parse("")
    assert cfg.integration.remote == "origin"
    assert cfg.integration.branch == "main"
    assert cfg.integration.manifest == "manifest.toml"
    assert cfg.integration.tag_format == "v{year}.{month:02d}.{n}" == config.DEFAULT_TAG_FORMAT
    assert (cfg.identity.name, cfg.identity.email) == ("lockstep", "lockstep@localhost")
    assert cfg.queue.mode == "serial"
    assert cfg.queue.max_recoveries == 3
    assert cfg.queue.infra_pause_after == 3
    assert cfg.queue.lease_ttl == 60.0
    assert cfg.queue.notify_attempts == 5
    assert cfg.queue.retry_backoff == 5.0
    assert cfg.queue.log_tail_lines == 50
    assert cfg.queue.kill_grace == 10.0
    assert cfg.components == {}
    assert cfg.stages == []
    assert cfg.notifiers == []


def test_stage_and_notifier_defaults() -> None:
    cfg = config.parse(
        "[[stages]]\nname = 'unit'\ncommand = ['pytest']\ntimeout = 60\n"
        "[[notifiers]]\nname = 'a'\ntype = 'webhook'\nurl = 'http://localhost:9/x'\nsecret = 's'\n"
        "[[notifiers]]\nname = 'b'\ntype = 'command'\ncommand = ['true']\n"
    )
    (stage,) = cfg.stages
    assert stage.retries == 2
    assert stage.infra_exit_code == 75
    assert stage.configurations is None
    webhook, command = cfg.notifiers
    assert webhook.events == ["rejected"]
    assert webhook.timeout == 10.0
    assert command.events == ["rejected"]
    assert command.timeout == 30.0


def test_partial_integration_table_keeps_the_other_defaults() -> None:
    cfg = config.parse("[integration]\nbranch = 'trunk'\n")
    assert cfg.integration.branch == "trunk"
    assert cfg.integration.remote == "origin"
    assert cfg.integration.tag_format == config.DEFAULT_TAG_FORMAT


# --- errors: one line, naming the key path ------------------------------------------------------

STAGE = "[[stages]]\nname = 'build'\ncommand = ['make']\ntimeout = 5\n"
WEB = "[components.web]\nurl = 'https://git.example.com/web.git'\n"
ERRORS = {
    "serve-reads": ("[serve]\nreads = 'everyone'\n", "serve.reads", "Input should be"),
    "serve-token-env": ("[serve]\ntoken_env = 'not a name'\n", "serve.token_env",
                        "is not an environment variable name"),
    "serve-unknown-key": ("[serve]\ntoken = 'abc'\n", "serve.token", ""),
    "serve-component-env": (WEB + "[serve.component_secret_envs]\nweb = '1X'\n",
                            "serve.component_secret_envs", "'1X' is not an environment variable"),
    "serve-component-name": ("[serve.component_secret_envs]\nWeb = 'WEB_KEY'\n",
                             "serve.component_secret_envs", "component name"),
    "serve-component-unknown": (WEB + "[serve.component_secret_envs]\ndb = 'DB_KEY'\n",
                                "serve.component_secret_envs.db",
                                "unknown component 'db' (components: web)"),
    "negative-timeout": (
        "[[stages]]\nname = 'build'\ncommand = ['make']\ntimeout = -5\n",
        "stages.0.timeout",
        "must be a positive number of seconds",
    ),
    "zero-timeout": (
        "[[stages]]\nname = 'build'\ncommand = ['make']\ntimeout = 0\n",
        "stages.0.timeout",
        "positive",
    ),
    "nan-timeout": (
        "[[stages]]\nname = 'build'\ncommand = ['make']\ntimeout = nan\n",
        "stages.0.timeout",
        "positive",
    ),
    "text-timeout": (
        "[[stages]]\nname = 'build'\ncommand = ['make']\ntimeout = 'soon'\n",
        "stages.0.timeout",
        "positive number",
    ),
    "missing-timeout": (
        "[[stages]]\nname = 'build'\ncommand = ['make']\n",
        "stages.0.timeout",
        "required key is missing",
    ),
    "second-stage-empty-command": (
        STAGE + "[[stages]]\nname = 'test'\ncommand = []\ntimeout = 5\n",
        "stages.1.command",
        "needs a command",
    ),
    "blank-command": (
        "[[stages]]\nname = 'build'\ncommand = ['  ']\ntimeout = 5\n",
        "stages.0.command",
        "needs a command",
    ),
    "command-is-a-string": (
        "[[stages]]\nname = 'build'\ncommand = 'make test'\ntimeout = 5\n",
        "stages.0.command",
        "valid list",
    ),
    "too-many-retries": (
        "[[stages]]\nname = 'build'\ncommand = ['make']\ntimeout = 5\nretries = 11\n",
        "stages.0.retries",
        "less than or equal to 10",
    ),
    "negative-retries": (
        "[[stages]]\nname = 'build'\ncommand = ['make']\ntimeout = 5\nretries = -1\n",
        "stages.0.retries",
        "greater than or equal to 0",
    ),
    "infra-exit-code-0": (
        "[[stages]]\nname = 'build'\ncommand = ['make']\ntimeout = 5\ninfra_exit_code = 0\n",
        "stages.0.infra_exit_code",
        "greater than or equal to 1",
    ),
    "infra-exit-code-256": (
        "[[stages]]\nname = 'build'\ncommand = ['make']\ntimeout = 5\ninfra_exit_code = 256\n",
        "stages.0.infra_exit_code",
        "less than or equal to 255",
    ),
    "unknown-stage-key": (
        "[[stages]]\nname = 'build'\ncommand = ['make']\ntimeout = 5\nshell = true\n",
        "stages.0.shell",
        "unknown key",
    ),
    "unknown-top-level-table": ("[integrations]\nbranch = 'main'\n", "integrations", "unknown key"),
    "unknown-integration-key": ("[integration]\nremot = 'origin'\n", "integration.remot",
                                "unknown key"),
    "tag-format-without-n": (
        "[integration]\ntag_format = 'release-{year}'\n",
        "integration.tag_format",
        "must contain {n}",
    ),
    "tag-format-unknown-field": (
        "[integration]\ntag_format = 'v{day}.{n}'\n",
        "integration.tag_format",
        "only {year}, {month} and {n} may appear",
    ),
    "tag-format-positional-field": (
        "[integration]\ntag_format = 'v{0}.{n}'\n",
        "integration.tag_format",
        "only {year}, {month} and {n} may appear",
    ),
    "queue-mode": ("[queue]\nmode = 'turbo'\n", "queue.mode", "'serial', 'speculative' or 'batch'"),
    "queue-knob-of-other-mode": ("[queue]\nmode = 'speculative'\nbatch_size = 4\n", "queue",
                                 "batch_size has no effect in mode 'speculative'"),
    "queue-knob-in-serial": ("[queue]\nrunners = 4\n", "queue",
                             "runners has no effect in mode \"serial\""),
    "queue-fixed-without-depth": ("[queue]\nmode = 'speculative'\nwindow = 'fixed'\n", "queue",
                                  "needs window_fixed"),
    "queue-depth-without-fixed": ("[queue]\nmode = 'speculative'\nwindow_fixed = 3\n",
                                  "queue", "window_fixed needs window = \"fixed\""),
    "queue-bisect-one": ("[queue]\nmode = 'batch'\nbisect_ways = 1\n", "queue.bisect_ways",
                         "must be 2 or more"),
    "queue-empty-pool": ("[queue]\nmode = 'speculative'\npools = {hw = 0}\n", "queue.pools",
                         "needs at least 1 runner"),
    "queue-zero-runners": ("[queue]\nmode = 'speculative'\nrunners = 0\n", "queue.runners",
                           "greater than or equal to 1"),
    "stage-unknown-pool": ("[queue]\nmode = 'speculative'\npools = {hw = 1}\n[[stages]]\n"
                           "name = 's'\ncommand = ['true']\ntimeout = 5\npool = 'gpu'\n",
                           "stages.0.pool", "pool 'gpu' is not declared"),
    "queue-negative-recoveries": ("[queue]\nmax_recoveries = -1\n", "queue.max_recoveries",
                                  "greater than or equal to 0"),
    "queue-zero-lease": ("[queue]\nlease_ttl = 0\n", "queue.lease_ttl", "greater than 0"),
    "queue-zero-infra-pause": ("[queue]\ninfra_pause_after = 0\n", "queue.infra_pause_after",
                               "greater than or equal to 1"),
    "unknown-queue-key": ("[queue]\nwindw = 4\n", "queue.windw", "unknown key"),
    "identity-not-a-table": ("identity = 'bot'\n", "identity", "valid dictionary"),
    "ext-url": (
        "[components.alpha]\nurl = 'ext::sh -c touch% /tmp/pwned'\n",
        "components.alpha.url",
        "ext::",
    ),
    "fd-url": ("[components.alpha]\nurl = 'fd::3'\n", "components.alpha.url", "ext::"),
    "option-url": ("[components.alpha]\nurl = '--upload-pack=touch /tmp/x'\n",
                   "components.alpha.url", "without spaces"),
    "option-ssh-url": (
        "[components.alpha]\nurl = 'a.git'\nssh_url = '-oProxyCommand=evil'\n",
        "components.alpha.ssh_url",
        "must be a git URL",
    ),
    "url-with-space": ("[components.alpha]\nurl = 'a b.git'\n", "components.alpha.url",
                       "without spaces"),
    "empty-url": ("[components.alpha]\nurl = ''\n", "components.alpha.url", "must be a git URL"),
    "missing-url": ("[components.alpha]\nimage = 'x'\n", "components.alpha.url",
                    "required key is missing"),
    "unknown-component-key": (
        "[components.alpha]\nurl = 'a.git'\nbrnach = 'main'\n",
        "components.alpha.brnach",
        "unknown key",
    ),
    "notifier-unknown-type": (
        "[[notifiers]]\ntype = 'pigeon'\n",
        "notifiers.0",
        "does not match any of the expected tags",
    ),
    "notifier-missing-type": ("[[notifiers]]\nurl = 'http://x'\n", "notifiers.0", "type"),
}


@pytest.mark.parametrize(("text", "path", "fragment"), ERRORS.values(), ids=ERRORS.keys())
def test_errors_are_one_line_config_errors_naming_the_key_path(
    text: str, path: str, fragment: str
) -> None:
    err = parse_error(text)
    line = err.one_line()
    assert "\n" not in err.message
    assert line.startswith(f"lockstep.toml: {path}: ")
    assert fragment in line
    assert err.exit_code == EXIT_USAGE


NOTIFIER_ERRORS = {
    "webhook-url": (
        "[[notifiers]]\nname = 'n'\ntype = 'webhook'\nurl = 'ftp://example.com/x'\nsecret = 's'\n",
        "notifiers.0.url",
        "must be an http:// or https:// URL",
    ),
    "command-empty": (
        "[[notifiers]]\nname = 'n'\ntype = 'command'\ncommand = []\n",
        "notifiers.0.command",
        "needs a command",
    ),
    "command-timeout": (
        "[[notifiers]]\nname = 'n'\ntype = 'command'\ncommand = ['x']\ntimeout = 0\n",
        "notifiers.0.timeout",
        "Input should be greater than 0",
    ),
}


@pytest.mark.parametrize(
    ("text", "path", "fragment"), NOTIFIER_ERRORS.values(), ids=NOTIFIER_ERRORS.keys()
)
def test_notifier_errors_name_the_notifier_and_the_key(
    text: str, path: str, fragment: str
) -> None:
    line = parse_error(text).one_line()
    assert line.startswith("lockstep.toml: notifiers.0.")
    key = path.rsplit(".", 1)[1]
    assert f".{key}: {fragment}" in line


@pytest.mark.parametrize(
    ("text", "path", "fragment"), NOTIFIER_ERRORS.values(), ids=NOTIFIER_ERRORS.keys()
)
def test_notifier_errors_name_the_exact_key_path(text: str, path: str, fragment: str) -> None:
    assert parse_error(text).one_line().startswith(f"lockstep.toml: {path}: {fragment}")


@pytest.mark.parametrize("url", ["ftp://x/y", "file:///tmp/x", "http://", "https://a b/c", "x"])
def test_webhook_url_must_be_http(url: str) -> None:
    err = parse_error(f"[[notifiers]]\nname = 'n'\ntype = 'webhook'\nurl = '{url}'\nsecret = 's'\n")
    assert "must be an http:// or https:// URL" in err.message


def test_webhook_without_any_secret_is_refused() -> None:
    err = parse_error("[[notifiers]]\nname = 'n'\ntype = 'webhook'\nurl = 'https://h/x'\n")
    assert "needs secret_env" in err.one_line()
    assert "notifiers.0" in err.one_line()


def test_several_problems_report_the_first_and_a_count() -> None:
    err = parse_error("[queue]\nmode = 'turbo'\nlease_ttl = 0\nkill_grace = -1\n")
    assert err.message.startswith("lockstep.toml: queue.mode: ")
    assert err.message.endswith("(+2 more)")


def test_invalid_toml_is_a_one_line_config_error() -> None:
    err = parse_error("[integration\nremote = 'origin'\n")
    assert err.message.startswith("lockstep.toml is not valid TOML: ")
    assert "\n" not in err.one_line()
    assert err.hint == "fix the syntax"


def test_source_name_is_used_in_messages() -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse("[queue]\nmode = 'x'\n", source="ws/lockstep.toml")
    assert exc.value.message.startswith("ws/lockstep.toml: queue.mode: ")


# Errors raised by lockstep.names inside validators, and by the whole-model checks.
NAME_ERRORS = {
    "branch": ("[integration]\nbranch = 'a..b'\n", "integration.branch"),
    "remote": ("[integration]\nremote = '-origin'\n", "integration.remote"),
    "manifest-absolute": ("[integration]\nmanifest = '/etc/passwd'\n", "integration.manifest"),
    "manifest-dotdot": ("[integration]\nmanifest = '../m.toml'\n", "integration.manifest"),
    "tag-format-space": ("[integration]\ntag_format = 'v {n}'\n", "integration.tag_format"),
    "stage-name": ("[[stages]]\nname = 'Build It'\ncommand = ['make']\ntimeout = 5\n",
                   "stages.0.name"),
    "stage-configurations": (
        "[[stages]]\nname = 'b'\ncommand = ['make']\ntimeout = 5\nconfigurations = ['Edge']\n",
        "stages.0.configurations",
    ),
    "depends-on-bad-name": ("[components.a]\nurl = 'a.git'\ndepends_on = ['B']\n",
                            "components.a.depends_on"),
    "component-key": ("[components.Alpha]\nurl = 'a.git'\n", "components.Alpha"),
    "depends-on-unknown": ("[components.a]\nurl = 'a.git'\ndepends_on = ['zeta']\n",
                           "components.a.depends_on.0"),
    "duplicate-stage": (STAGE + STAGE, "stages.1.name"),
    "notifier-events": ("[[notifiers]]\nname = 'n'\ntype = 'command'\ncommand = ['x']\n"
                        "events = ['nope']\n", "notifiers.0.events"),
}


@pytest.mark.parametrize(("text", "path"), NAME_ERRORS.values(), ids=NAME_ERRORS.keys())
def test_name_and_consistency_errors_are_one_line_config_errors(text: str, path: str) -> None:
    del path  # see the xfail test below
    err = parse_error(text)
    assert err.message.startswith("lockstep.toml: ")
    assert "\n" not in err.message
    assert isinstance(err, UsageError)


@pytest.mark.parametrize(("text", "path"), NAME_ERRORS.values(), ids=NAME_ERRORS.keys())
def test_name_and_consistency_errors_name_the_key_path(text: str, path: str) -> None:
    assert f"{path}: " in parse_error(text).one_line()


def test_component_key_with_trailing_newline_is_refused() -> None:
    parse_error('[components."alpha\\n"]\nurl = "a.git"\n')


def test_unknown_dependency_and_duplicate_stage_messages() -> None:
    assert "components.a.depends_on.0: unknown component 'zeta'" in parse_error(
        NAME_ERRORS["depends-on-unknown"][0]
    ).message
    assert "stages.1.name: stage 'build' is declared twice" in parse_error(STAGE + STAGE).message
    assert "notifiers.0.events: unknown event(s) ['nope']" in parse_error(
        NAME_ERRORS["notifier-events"][0]
    ).message


# --- webhook secrets ---------------------------------------------------------------------------

WEBHOOK = "[[notifiers]]\nname = 'n'\ntype = 'webhook'\nurl = 'https://hooks.example.com/x'\n"


def webhook(extra: str) -> WebhookNotifier:
    notifier = config.parse(WEBHOOK + extra).notifiers[0]
    assert isinstance(notifier, WebhookNotifier)
    return notifier


def test_secret_env_is_read_when_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    notifier = webhook("secret_env = 'LOCKSTEP_TEST_SECRET'\n")
    monkeypatch.setenv("LOCKSTEP_TEST_SECRET", "s3cret")
    assert notifier.resolve_secret() == b"s3cret"
    monkeypatch.setenv("LOCKSTEP_TEST_SECRET", "rotated")
    assert notifier.resolve_secret() == b"rotated"  # read at use, not at parse


def test_secret_env_parses_even_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCKSTEP_TEST_SECRET", raising=False)
    notifier = webhook("secret_env = 'LOCKSTEP_TEST_SECRET'\n")
    assert notifier.secret_env == "LOCKSTEP_TEST_SECRET"


@pytest.mark.parametrize("value", [None, ""])
def test_unset_or_empty_secret_env_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("LOCKSTEP_TEST_SECRET", raising=False)
    else:
        monkeypatch.setenv("LOCKSTEP_TEST_SECRET", value)
    notifier = webhook("secret_env = 'LOCKSTEP_TEST_SECRET'\n")
    with pytest.raises(UsageError) as exc:
        notifier.resolve_secret()
    assert exc.value.message == "webhook secret variable LOCKSTEP_TEST_SECRET is not set"
    assert "export LOCKSTEP_TEST_SECRET=" in (exc.value.hint or "")


def test_inline_secret() -> None:
    assert webhook("secret = 'inline'\n").resolve_secret() == b"inline"


def test_secret_env_wins_over_inline_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKSTEP_TEST_SECRET", "from-env")
    notifier = webhook("secret = 'inline'\nsecret_env = 'LOCKSTEP_TEST_SECRET'\n")
    assert notifier.resolve_secret() == b"from-env"


# --- webhook signatures ------------------------------------------------------------------------


def test_sign_is_prefixed_hex_hmac_sha256() -> None:
    # RFC 4231, test case 2
    assert notify.sign(b"Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_verify_accepts_the_right_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKSTEP_TEST_SECRET", "k")
    secret = webhook("secret_env = 'LOCKSTEP_TEST_SECRET'\n").resolve_secret()
    body = b'{"event": "rejected", "item": "q3"}'
    assert notify.verify(secret, body, notify.sign(secret, body))


@pytest.mark.parametrize(
    "header",
    [
        notify.sign(b"k", b'{"item": "q4"}'),  # other body
        notify.sign(b"other", b'{"item": "q3"}'),  # other secret
        notify.sign(b"k", b'{"item": "q3"}').removeprefix("sha256="),  # no prefix
        notify.sign(b"k", b'{"item": "q3"}').upper(),
        notify.sign(b"k", b'{"item": "q3"}') + "0",
        "sha1=" + notify.sign(b"k", b'{"item": "q3"}').removeprefix("sha256="),
        "",
    ],
    ids=["body", "secret", "no-prefix", "uppercase", "longer", "sha1", "empty"],
)
def test_verify_refuses_wrong_signatures(header: str) -> None:
    assert notify.verify(b"k", b'{"item": "q3"}', header) is False


def test_verify_refuses_non_ascii_header() -> None:
    assert notify.verify(b"k", b"{}", "sha256=\u00e9") is False



# --- pass_env: what a stage may see of the worker's environment -------------------------------


def test_pass_env_on_stages_and_queue() -> None:
    cfg = config.parse("[queue]\npass_env = ['CI', 'CI_*']\n"
                       "[[stages]]\nname = 'b'\ncommand = ['make']\ntimeout = 5\n"
                       "pass_env = ['HTTP?_PROXY', 'GOPATH']\n")
    assert cfg.queue.pass_env == ["CI", "CI_*"]
    assert cfg.stages[0].pass_env == ["HTTP?_PROXY", "GOPATH"]
    assert config.parse("").queue.pass_env == []
    assert config.parse(STAGE).stages[0].pass_env == []


@pytest.mark.parametrize("entry", ["", "A B", "A=B", "$HOME", "A-B", "[A]*"])
def test_pass_env_entries_are_names_or_globs(entry: str) -> None:
    err = parse_error(STAGE + f"pass_env = ['OK', {entry!r}]\n")
    assert err.message.startswith("lockstep.toml: stages.0.pass_env: entry 1 ")
    err = parse_error(f"[queue]\npass_env = [{entry!r}]\n")
    assert err.message.startswith("lockstep.toml: queue.pass_env: entry 0 ")


# --- notifier names: deliveries are bound to them ---------------------------------------------


def test_notifiers_are_named() -> None:
    assert [n.name for n in config.parse(FULL).notifiers] == ["hooks", "script"]


def test_notifier_name_is_required() -> None:
    err = parse_error("[[notifiers]]\ntype = 'command'\ncommand = ['x']\n")
    assert err.message == "lockstep.toml: notifiers.0.name: required key is missing"


@pytest.mark.parametrize("bad", ["", "Owners", "a b", "-x", "a/b"])
def test_notifier_name_uses_the_component_alphabet(bad: str) -> None:
    err = parse_error(f"[[notifiers]]\nname = {bad!r}\ntype = 'command'\ncommand = ['x']\n")
    assert err.message.startswith("lockstep.toml: notifiers.0.name: invalid notifier name")


def test_notifier_names_are_unique() -> None:
    one = "[[notifiers]]\nname = 'ops'\ntype = 'command'\ncommand = ['x']\n"
    other = "[[notifiers]]\nname = 'dev'\ntype = 'command'\ncommand = ['y']\n"
    err = parse_error(one + other + one)
    assert err.message == ("lockstep.toml: notifiers.2.name: notifier 'ops' is declared twice "
                           "(also notifiers.0)")


# --- misspelt keys and hints -------------------------------------------------------------------


MISSPELT = {
    "stage-timout": ("[[stages]]\nname = 'b'\ncommand = ['make']\ntimout = 5\n",
                     "stages.0.timout", "'timeout'"),
    "top-level": ("[integrations]\nbranch = 'main'\n", "integrations", "'integration'"),
    "queue": ("[queue]\nlease_tll = 5\n", "queue.lease_tll", "'lease_ttl'"),
    "component": ("[components.a]\nurl = 'a.git'\nowner = ['x']\n", "components.a.owner",
                  "'owners'"),
    "webhook": ("[[notifiers]]\nname = 'n'\ntype = 'webhook'\nurl = 'https://h/x'\n"
                "secret_evn = 'S'\n", "notifiers.0.secret_evn", "'secret_env'"),
    "command-notifier": ("[[notifiers]]\nname = 'n'\ntype = 'command'\ncomand = ['x']\n",
                         "notifiers.0.comand", "'command'"),
}


@pytest.mark.parametrize(("text", "path", "meant"), MISSPELT.values(), ids=MISSPELT.keys())
def test_a_misspelt_key_is_unknown_with_a_suggestion(text: str, path: str, meant: str) -> None:
    err = parse_error(text)
    # Not "required key is missing" for the key that was meant, and no "(+1 more)" for it.
    assert err.message == f"lockstep.toml: {path}: unknown key"
    assert err.hint == f"did you mean {meant}?"


def test_an_unknown_key_with_no_close_match_lists_the_known_keys() -> None:
    err = parse_error("[identity]\nzzz = 1\n")
    assert err.one_line() == ("lockstep.toml: identity.zzz: unknown key "
                              "(known keys here: name, email)")


def test_a_misspelt_key_still_counts_other_problems() -> None:
    err = parse_error("[[stages]]\nname = 'b'\ncommand = []\ntimout = 5\n")
    assert err.message == "lockstep.toml: stages.0.timout: unknown key (+1 more)"


def test_name_errors_keep_the_hint_of_the_name_check() -> None:
    hint = "use lowercase letters, digits, '.', '_' or '-', starting and ending alphanumeric"
    assert parse_error("[[stages]]\nname = 'Build It'\ncommand = ['make']\ntimeout = 5\n"
                       ).hint == hint
    assert parse_error("[components.Alpha]\nurl = 'a.git'\n").hint == hint
    assert "e.g. v1.4.2" in (parse_error("[integration]\nbranch = 'a..b'\n").hint or "")


# --- stage coverage: a bump must never land untested --------------------------------------------


def stages(*restrictions: list[str] | None) -> config.Config:
    return config.Config(stages=[
        config.Stage(name=f"s{i}", command=["x"], timeout=1, configurations=r)
        for i, r in enumerate(restrictions)
    ])


def coverage_error(cfg: config.Config, configurations: list[str]) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        config.check_stage_coverage(cfg, configurations)
    return exc.value


def test_covered_configurations_pass() -> None:
    config.check_stage_coverage(stages(None), ["default", "edge"])
    config.check_stage_coverage(stages(["default"], ["edge"]), ["default", "edge"])
    assert config.uncovered_configurations(stages(["default"], None), ["default", "edge"]) == []


def test_no_stages_at_all_is_an_error_naming_the_configuration() -> None:
    err = coverage_error(stages(), ["default"])
    assert err.message == ("lockstep.toml: no [[stages]] declared, so bumps to configuration "
                           "'default' would land untested")
    assert "configurations 'default', 'edge' would" in coverage_error(
        stages(), ["default", "edge"]).message
    assert err.hint == "add a [[stages]] entry that tests the manifest"
    assert config.uncovered_configurations(stages(), ["default", "edge"]) == ["default", "edge"]


def test_a_configuration_every_stage_skips_is_an_error() -> None:
    cfg = stages(["default"], ["default"])
    assert config.uncovered_configurations(cfg, ["default", "edge"]) == ["edge"]
    err = coverage_error(cfg, ["default", "edge"])
    assert "no stage runs for configuration 'edge'" in err.message
    assert err.hint == "add 'edge' to a stage's configurations, or drop a stage's restriction"


def test_a_stage_naming_an_unknown_configuration_suggests_the_close_one() -> None:
    err = coverage_error(stages(None, ["default", "defualt"]), ["default", "edge"])
    assert err.message == ("lockstep.toml: stages.1.configurations.1: stage 's1' names "
                           "configuration 'defualt', which the manifest does not have")
    assert err.hint == "did you mean 'default'? the manifest has: default, edge"
    err = coverage_error(stages(["zzz"], None), ["default"])
    assert err.hint == "the manifest has: default"


def test_unset_secrets_names_the_notifier_and_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config.parse(
        "[[notifiers]]\nname = 'inline'\ntype = 'webhook'\nurl = 'https://h/x'\nsecret = 's'\n"
        "[[notifiers]]\nname = 'ops'\ntype = 'webhook'\nurl = 'https://h/y'\n"
        "secret_env = 'LOCKSTEP_TEST_OPS'\n"
        "[[notifiers]]\nname = 'dev'\ntype = 'webhook'\nurl = 'https://h/z'\n"
        "secret_env = 'LOCKSTEP_TEST_DEV'\n"
        "[[notifiers]]\nname = 'cmd'\ntype = 'command'\ncommand = ['x']\n")
    monkeypatch.setenv("LOCKSTEP_TEST_OPS", "k")
    monkeypatch.delenv("LOCKSTEP_TEST_DEV", raising=False)
    assert config.unset_secrets(cfg) == [
        "notifier 'dev' signs with $LOCKSTEP_TEST_DEV, which is not set"]
    monkeypatch.setenv("LOCKSTEP_TEST_OPS", "")  # empty cannot sign either
    assert len(config.unset_secrets(cfg)) == 2
    monkeypatch.setenv("LOCKSTEP_TEST_OPS", "k")
    monkeypatch.setenv("LOCKSTEP_TEST_DEV", "k")
    assert config.unset_secrets(cfg) == []


@pytest.mark.parametrize("value", ['""', '"  "', '"a <b>"', '"x\\ny"'])
def test_an_identity_git_would_refuse_is_a_config_error(value: str) -> None:
    """An empty or malformed ident would make every landing fail for ever."""
    with pytest.raises(ConfigError, match=r"identity\.name: must be non-empty"):
        config.parse(f"[identity]\nname = {value}\n")


@pytest.mark.parametrize(("deps", "cycle"), [
    ({"a": ["a"]}, "a → a"),
    ({"a": ["b"], "b": ["c"], "c": ["a"]}, "a → b → c → a"),
    ({"worker": ["api"], "api": ["web"], "web": ["worker"]}, "api → web → worker → api"),
    # Two cycles through a: a → b → a is a prefix of a → b → c → a, hence smaller.
    ({"a": ["c", "b"], "b": ["c", "a"], "c": ["a"]}, "a → b → a"),
    # The smallest name on any cycle starts it, even when a smaller one is only upstream.
    ({"a": ["x"], "x": ["y"], "y": ["x"]}, "x → y → x"),
])
def test_a_dependency_cycle_is_reported_in_the_specified_order(
        deps: dict[str, list[str]], cycle: str) -> None:
    """A release is cut in dependency order, which a cycle makes impossible; the cycle is named
    from its smallest component, the lexicographically smallest of several (release.md §3)."""
    text = "".join(f'[components.{n}]\nurl = "../{n}.git"\ndepends_on = {d!r}\n'.replace("'", '"')
                   for n, d in deps.items())
    with pytest.raises(DependencyCycleError) as exc:
        config.parse(text)
    assert exc.value.message == f"dependency cycle: {cycle}"
    assert exc.value.one_line().startswith(f"DependencyCycleError: dependency cycle: {cycle}")
    assert exc.value.exit_code == 2

"""The manifest: parsing, round-trip edits that keep every other byte, apply, diff, validate."""

from __future__ import annotations

import pytest

from lockstep import manifest
from lockstep.errors import ConfigError, NotFoundError
from lockstep.manifest import Change, Manifest, Pin

A = "a" * 40
B = "b" * 40
C = "c" * 40
D = "0123456789abcdef0123456789abcdef01234567"

# Hand-written, with comments everywhere, mixed quoting and spacing, and a table-form pin.
TEXT = f"""\
# Release manifest for acme.
# Do not edit by hand during a release.

[configurations.default]   # production
api = {{version = "v1.0.0", sha = "{A}"}}  # pinned by q3
db = {{ version = 'v2.0.0', sha = '{B}', digest = "sha256:dbdb" }}
web={{version="v3.0.0",sha="{C}"}}

[configurations.edge]
# edge runs the newest api
api = {{version = "v1.1.0", sha = "{B}"}}

[configurations.hardware-x.api]
version = "v0.9.0"
sha = "{D}"
digest = "sha256:hw"
"""


def changed_lines(old: str, new: str) -> list[tuple[int, str, str]]:
    """(index, old line, new line) for every differing line of two same-length texts."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    assert len(a) == len(b), "line count changed"
    return [(i, x, y) for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


def without_line(text: str, index: int) -> str:
    lines = text.splitlines(keepends=True)
    del lines[index]
    return "".join(lines)


def line_index(text: str, start: str) -> int:
    (index,) = [i for i, line in enumerate(text.splitlines()) if line.startswith(start)]
    return index


# --- reading -----------------------------------------------------------------------------------


def test_parse_reads_every_configuration_in_file_order() -> None:
    m = Manifest(TEXT)
    assert m.configurations == ["default", "edge", "hardware-x"]
    assert m.pins("default") == {
        "api": Pin("v1.0.0", A),
        "db": Pin("v2.0.0", B, "sha256:dbdb"),
        "web": Pin("v3.0.0", C),
    }
    assert m.pins("edge") == {"api": Pin("v1.1.0", B)}
    assert m.pin("hardware-x", "api") == Pin("v0.9.0", D, "sha256:hw")
    assert m.pin("edge", "db") is None
    assert m.configurations_pinning("api") == ["default", "edge", "hardware-x"]
    assert m.configurations_pinning("db") == ["default"]
    assert m.configurations_pinning("cache") == []


def test_pins_returns_a_copy() -> None:
    m = Manifest(TEXT)
    m.pins("default").clear()
    assert len(m.pins("default")) == 3


def test_unknown_configuration_is_not_found() -> None:
    m = Manifest(TEXT)
    with pytest.raises(NotFoundError) as exc:
        m.pins("staging")
    assert exc.value.message == "unknown configuration 'staging'"
    assert exc.value.hint == "configurations: default, edge, hardware-x"
    with pytest.raises(NotFoundError):
        m.pin("staging", "api")


def test_to_dict_and_pin_to_dict() -> None:
    m = Manifest(TEXT)
    assert m.to_dict()["default"]["db"] == {"version": "v2.0.0", "sha": B, "digest": "sha256:dbdb"}
    assert m.to_dict()["edge"] == {"api": {"version": "v1.1.0", "sha": B}}
    assert Pin("v1", A).to_dict() == {"version": "v1", "sha": A}  # no digest key when unknown


def test_render_new_round_trips() -> None:
    configurations = {
        "default": {"api": Pin("v1.0.0", A), "db": Pin("v2.0.0", B, "sha256:x")},
        "edge": {"api": Pin("v1.1.0", C)},
    }
    text = manifest.render_new(configurations)
    assert text.startswith(manifest.HEADER)
    m = Manifest(text)
    assert m.configurations == ["default", "edge"]
    assert m.pins("default") == configurations["default"]
    assert m.pins("edge") == configurations["edge"]
    assert manifest.render_new(configurations) == text  # deterministic


# --- round-trip edits --------------------------------------------------------------------------


def test_with_pin_rewrites_only_the_pinned_line() -> None:
    new = Manifest(TEXT).with_pin("default", "api", Pin("v1.2.0", D))
    assert changed_lines(TEXT, new) == [
        (
            4,
            f'api = {{version = "v1.0.0", sha = "{A}"}}  # pinned by q3\n',
            f'api = {{version = "v1.2.0", sha = "{D}"}}  # pinned by q3\n',
        )
    ]
    assert Manifest(new).pin("default", "api") == Pin("v1.2.0", D)


def test_with_pin_in_another_configuration_leaves_default_alone() -> None:
    new = Manifest(TEXT).with_pin("edge", "api", Pin("v1.3.0", C))
    ((index, _, line),) = changed_lines(TEXT, new)
    assert index == line_index(TEXT, 'api = {version = "v1.1.0"')
    assert line == f'api = {{version = "v1.3.0", sha = "{C}"}}\n'
    m = Manifest(new)
    assert m.pins("default") == Manifest(TEXT).pins("default")
    assert m.pins("hardware-x") == Manifest(TEXT).pins("hardware-x")


def test_with_pin_on_a_table_form_pin_rewrites_its_value_lines() -> None:
    new = Manifest(TEXT).with_pin("hardware-x", "api", Pin("v1.0.0", A, "sha256:new"))
    changes = changed_lines(TEXT, new)
    assert [(old, line) for _, old, line in changes] == [
        ('version = "v0.9.0"\n', 'version = "v1.0.0"\n'),
        (f'sha = "{D}"\n', f'sha = "{A}"\n'),
        ('digest = "sha256:hw"\n', 'digest = "sha256:new"\n'),
    ]


def test_with_pin_sets_a_digest() -> None:
    new = Manifest(TEXT).with_pin("default", "web", Pin("v3.1.0", A, "sha256:web"))
    ((index, _, line),) = changed_lines(TEXT, new)
    assert index == line_index(TEXT, "web=")
    assert 'digest = "sha256:web"' in line
    assert Manifest(new).pin("default", "web") == Pin("v3.1.0", A, "sha256:web")


def test_with_pin_removes_a_digest_that_is_no_longer_known() -> None:
    new = Manifest(TEXT).with_pin("default", "db", Pin("v2.1.0", C))
    ((index, _, line),) = changed_lines(TEXT, new)
    assert index == line_index(TEXT, "db = ")
    assert "digest" not in line
    assert Manifest(new).pin("default", "db") == Pin("v2.1.0", C)


def test_with_pin_removes_a_table_form_digest() -> None:
    new = Manifest(TEXT).with_pin("hardware-x", "api", Pin("v1.0.0", A))
    assert "sha256:hw" not in new
    assert new.startswith(TEXT.split("[configurations.hardware-x.api]")[0])
    assert Manifest(new).pin("hardware-x", "api") == Pin("v1.0.0", A)


def test_with_pin_is_deterministic_and_does_not_change_the_manifest() -> None:
    m = Manifest(TEXT)
    first = m.with_pin("default", "api", Pin("v1.2.0", D))
    assert m.with_pin("default", "api", Pin("v1.2.0", D)) == first
    assert Manifest(TEXT).with_pin("default", "api", Pin("v1.2.0", D)) == first
    assert m.text == TEXT
    assert m.pin("default", "api") == Pin("v1.0.0", A)


def test_with_pin_to_the_same_pin_is_byte_identical() -> None:
    m = Manifest(TEXT)
    assert m.with_pin("default", "api", Pin("v1.0.0", A)) == TEXT
    assert m.with_pin("hardware-x", "api", Pin("v0.9.0", D, "sha256:hw")) == TEXT


def test_adding_a_component_inserts_one_line_after_the_last_pin() -> None:
    text = f"""\
# header

[configurations.default]
api = {{version = "v1.0.0", sha = "{A}"}}

[configurations.edge]
api = {{version = "v1.1.0", sha = "{A}"}}
"""
    new = Manifest(text).with_pin("default", "cache", Pin("v0.1.0", B))
    index = line_index(new, "cache = ")
    assert index == line_index(text, 'api = {version = "v1.0.0"') + 1
    assert new.splitlines()[index] == f'cache = {{version = "v0.1.0", sha = "{B}"}}'
    assert without_line(new, index) == text
    m = Manifest(new)
    assert m.pins("default") == {"api": Pin("v1.0.0", A), "cache": Pin("v0.1.0", B)}
    assert m.pins("edge") == {"api": Pin("v1.1.0", A)}


def test_adding_a_component_to_the_last_configuration_appends_it() -> None:
    new = Manifest(TEXT).with_pin("edge", "db", Pin("v2.0.0", B, "sha256:dbdb"))
    index = line_index(new, "db = {version")
    assert new.splitlines()[index] == (
        f'db = {{version = "v2.0.0", sha = "{B}", digest = "sha256:dbdb"}}'
    )
    assert without_line(new, index) == TEXT
    assert Manifest(new).pins("edge") == {
        "api": Pin("v1.1.0", B),
        "db": Pin("v2.0.0", B, "sha256:dbdb"),
    }


def test_adding_a_component_keeps_the_next_tables_comment_with_it() -> None:
    text = f"""\
[configurations.default]
api = {{version = "v1.0.0", sha = "{A}"}}

# edge runs the newest api
[configurations.edge]
api = {{version = "v1.1.0", sha = "{B}"}}
"""
    new = Manifest(text).with_pin("default", "cache", Pin("v0.1.0", C))
    assert Manifest(new).pins("default")["cache"] == Pin("v0.1.0", C)  # the data is right
    assert line_index(new, "cache = ") == line_index(text, "api = {version = \"v1.0.0\"") + 1


def test_with_pin_unknown_configuration_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        Manifest(TEXT).with_pin("staging", "api", Pin("v1", A))


def test_with_pin_on_an_inline_configuration() -> None:
    text = f'[configurations]\ndefault = {{api = {{version = "v1.0.0", sha = "{A}"}}}}\n'
    assert Manifest(text).pins("default") == {"api": Pin("v1.0.0", A)}
    new = Manifest(text).with_pin("default", "api", Pin("v1.1.0", B))
    assert Manifest(new).pin("default", "api") == Pin("v1.1.0", B)


def test_with_pin_on_dotted_keys() -> None:
    text = f'[configurations]\ndefault.api = {{version = "v1.0.0", sha = "{A}"}}\n'
    new = Manifest(text).with_pin("default", "api", Pin("v1.1.0", B))
    assert new == f'[configurations]\ndefault.api = {{version = "v1.1.0", sha = "{B}"}}\n'


# --- apply -------------------------------------------------------------------------------------


def test_apply_applies_bumps_in_order() -> None:
    m = Manifest(TEXT)
    bumps = [
        ("default", "api", Pin("v1.1.0", B)),
        ("edge", "api", Pin("v1.2.0", C)),
        ("default", "api", Pin("v1.2.0", C)),  # a later bump of the same pin wins
        ("default", "cache", Pin("v0.1.0", D, "sha256:c")),
        ("default", "db", Pin("v2.0.1", A)),
    ]
    new = m.apply(bumps)
    n = Manifest(new)
    assert n.pins("default") == {
        "api": Pin("v1.2.0", C),
        "db": Pin("v2.0.1", A),
        "web": Pin("v3.0.0", C),
        "cache": Pin("v0.1.0", D, "sha256:c"),
    }
    assert n.pins("edge") == {"api": Pin("v1.2.0", C)}
    assert n.pins("hardware-x") == m.pins("hardware-x")
    # the same as chaining with_pin, and the comments are all still there
    chained = TEXT
    for configuration, component, pin in bumps:
        chained = Manifest(chained).with_pin(configuration, component, pin)
    assert new == chained
    for comment in ["# Release manifest for acme.", "# production", "# pinned by q3",
                    "# edge runs the newest api"]:
        assert comment in new
    assert m.text == TEXT


def test_apply_of_nothing_is_the_same_text() -> None:
    assert Manifest(TEXT).apply([]) == TEXT


def test_apply_stops_at_an_unknown_configuration() -> None:
    with pytest.raises(NotFoundError):
        Manifest(TEXT).apply([("default", "api", Pin("v1.1.0", B)), ("nope", "api", Pin("v1", A))])


# --- diff --------------------------------------------------------------------------------------


def test_diff_of_identical_manifests_is_empty() -> None:
    assert manifest.diff(Manifest(TEXT), Manifest(TEXT)) == []


def test_diff_lists_changes_additions_and_removals_in_order() -> None:
    old = Manifest(TEXT)
    new_text = f"""\
[configurations.default]
api = {{version = "v1.0.0", sha = "{A}"}}
db = {{version = "v2.0.0", sha = "{B}"}}
cache = {{version = "v0.1.0", sha = "{D}"}}

[configurations.staging]
api = {{version = "v1.0.0", sha = "{A}"}}

[configurations.edge]
api = {{version = "v1.2.0", sha = "{C}"}}
"""
    changes = manifest.diff(old, Manifest(new_text))
    assert changes == [
        Change("default", "db", Pin("v2.0.0", B, "sha256:dbdb"), Pin("v2.0.0", B)),  # digest
        Change("default", "web", Pin("v3.0.0", C), None),
        Change("default", "cache", None, Pin("v0.1.0", D)),
        Change("edge", "api", Pin("v1.1.0", B), Pin("v1.2.0", C)),
        Change("hardware-x", "api", Pin("v0.9.0", D, "sha256:hw"), None),
        Change("staging", "api", None, Pin("v1.0.0", A)),
    ]


def test_diff_after_with_pin_is_exactly_that_pin() -> None:
    old = Manifest(TEXT)
    new = Manifest(old.with_pin("edge", "api", Pin("v1.2.0", C)))
    assert manifest.diff(old, new) == [Change("edge", "api", Pin("v1.1.0", B), Pin("v1.2.0", C))]
    assert manifest.diff(new, old) == [Change("edge", "api", Pin("v1.2.0", C), Pin("v1.1.0", B))]


def test_change_describe_and_to_dict() -> None:
    bump = Change("edge", "api", Pin("v1.1.0", B), Pin("v1.2.0", C, "sha256:x"))
    assert bump.describe() == "api v1.1.0 → v1.2.0 [edge]"
    assert bump.to_dict() == {
        "configuration": "edge",
        "component": "api",
        "old": {"version": "v1.1.0", "sha": B},
        "new": {"version": "v1.2.0", "sha": C, "digest": "sha256:x"},
    }
    assert Change("default", "db", None, Pin("v1", A)).describe() == "db (none) → v1 [default]"
    removed = Change("default", "db", Pin("v1", A), None)
    assert removed.describe() == "db v1 → (removed) [default]"
    assert removed.to_dict()["new"] is None


# --- validate ----------------------------------------------------------------------------------


def test_validate_against_declared_components() -> None:
    m = Manifest(TEXT)
    assert m.validate({"api", "db", "web"}) == []
    assert m.validate({"api", "db", "web", "unused"}) == []
    assert m.validate({"db", "web"}) == [
        "configuration 'default' pins 'api', which lockstep.toml does not declare",
        "configuration 'edge' pins 'api', which lockstep.toml does not declare",
        "configuration 'hardware-x' pins 'api', which lockstep.toml does not declare",
    ]
    assert m.validate(set()) == [
        f"configuration 'default' pins {c!r}, which lockstep.toml does not declare"
        for c in ["api", "db", "web"]
    ] + [
        f"configuration {c!r} pins 'api', which lockstep.toml does not declare"
        for c in ["edge", "hardware-x"]
    ]


# --- parse errors ------------------------------------------------------------------------------

DEFAULT = f'[configurations.default]\napi = {{version = "v1.0.0", sha = "{A}"}}\n'
PARSE_ERRORS = {
    "not-toml": ("[configurations.default\n", "m.toml is not valid TOML"),
    "no-configurations": ("[pins]\n", "m.toml: missing [configurations] table"),
    "configurations-not-a-table": ("configurations = 3\n", "missing [configurations] table"),
    "no-default": (
        f'[configurations.edge]\napi = {{version = "v1.0.0", sha = "{A}"}}\n',
        "m.toml: configuration 'default' is missing",
    ),
    "empty-configurations": ("[configurations]\n", "configuration 'default' is missing"),
    "short-sha": (
        '[configurations.default]\napi = {version = "v1.0.0", sha = "abc123"}\n',
        "m.toml: configurations.default.api: invalid commit SHA 'abc123'",
    ),
    "uppercase-sha": (
        f'[configurations.default]\napi = {{version = "v1.0.0", sha = "{A.upper()}"}}\n',
        "configurations.default.api: invalid commit SHA",
    ),
    "missing-sha": (
        '[configurations.default]\napi = {version = "v1.0.0"}\n',
        "configurations.default.api: invalid commit SHA ''",
    ),
    "missing-version": (
        f'[configurations.default]\napi = {{sha = "{A}"}}\n',
        "configurations.default.api: invalid version ''",
    ),
    "bad-version": (
        f'[configurations.default]\napi = {{version = "v1;rm -rf", sha = "{A}"}}\n',
        "configurations.default.api: invalid version",
    ),
    "unknown-pin-key": (
        f'[configurations.default]\napi = {{version = "v1", sha = "{A}", branch = "main"}}\n',
        "m.toml: configurations.default.api: expected { version = ..., sha = ..., digest = ... }",
    ),
    "pin-is-a-string": (
        '[configurations.default]\napi = "v1.0.0"\n',
        "configurations.default.api: expected { version",
    ),
    "bad-component-name": (
        f'[configurations.default]\nApi = {{version = "v1", sha = "{A}"}}\n',
        "configurations.default.Api: invalid component name 'Api'",
    ),
    "configuration-not-a-table": (
        f"[configurations]\nedge = 3\n{DEFAULT}",
        "m.toml: configurations.edge must be a table",
    ),
    "bad-configuration-name": (
        DEFAULT + f'[configurations.Edge]\napi = {{version = "v1", sha = "{A}"}}\n',
        "m.toml: invalid configuration name 'Edge'",
    ),
}


@pytest.mark.parametrize(("text", "fragment"), PARSE_ERRORS.values(), ids=PARSE_ERRORS.keys())
def test_parse_errors_are_config_errors(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Manifest(text, source="m.toml")
    assert fragment in exc.value.message
    assert "\n" not in exc.value.one_line()
    assert exc.value.hint, "every manifest error says how to fix it"


def test_invalid_sha_keeps_the_hint_of_the_name_check() -> None:
    with pytest.raises(ConfigError) as exc:
        Manifest('[configurations.default]\napi = {version = "v1", sha = "abc"}\n', "m.toml")
    assert exc.value.one_line() == ("m.toml: configurations.default.api: invalid commit SHA 'abc' "
                                    "(expected 40 lowercase hex digits)")


def test_with_pin_on_an_unknown_configuration_lists_the_known_ones() -> None:
    with pytest.raises(NotFoundError) as exc:
        Manifest(TEXT).with_pin("nope", "api", Pin("v1", A))
    assert exc.value.hint == "configurations: default, edge, hardware-x"


@pytest.mark.parametrize("digest", ["5", "{algo = 'sha256'}", "['a', 'b']"])
def test_non_string_digest_is_refused(digest: str) -> None:
    text = f'[configurations.default]\napi = {{version = "v1", sha = "{A}", digest = {digest}}}\n'
    with pytest.raises(ConfigError):
        Manifest(text)

"""Pinning errors on the engine (pure, on bytes): each names the file and line and what to do."""

from __future__ import annotations

import re

import pytest

from lockstep import imageref
from lockstep.errors import (
    PinAmbiguousError,
    PinConflictError,
    PinCountError,
    PinError,
    PinNotFoundError,
    PinParseError,
    PinUnresolvableError,
    ValidationError,
)
from lockstep.pinning.model import Kind, NewValue, PinSpec
from lockstep.pinning.plan import apply_edits, compute_edits, plan_file
from lockstep.pinning.regex_pin import validate_pattern
from lockstep.pinning.yaml_scalar import needs_quotes

DIGEST = "sha256:" + "ab" * 32


def pin(kind: Kind, image: str | None = None, max_matches: int | None = 1) -> PinSpec:
    return PinSpec(kind=kind, file="f", image=imageref.parse(image) if image else None,
                   max_matches=max_matches)


def edits(path: str, text: str, *pins: tuple[PinSpec, NewValue]) -> bytes:
    data = text.encode()
    return apply_edits(data, compute_edits(path, data, list(pins)))


def test_not_found_names_the_images_found_instead() -> None:
    text = "FROM nginx:1.25\nFROM --platform=$BUILDPLATFORM acme/app:${TARGETARCH}\n"
    with pytest.raises(PinNotFoundError) as exc:
        edits("Dockerfile", text, (pin("dockerfile", "redis"), NewValue("7")))
    line = exc.value.one_line()
    assert "Dockerfile: no reference to image redis" in line
    assert "images found: nginx" in line
    assert "automatic platform ARG TARGETARCH" in line


def test_not_found_never_by_suffix_and_empty_tag_hint() -> None:
    text = "image:\n  repository: materialize/console\n  tag: ''\n"
    with pytest.raises(PinNotFoundError) as exc:
        edits("values.yaml", text, (pin("helm-values", "materialize/console"), NewValue("1")))
    assert "pin Chart.yaml (kind chart)" in exc.value.one_line()
    with pytest.raises(PinNotFoundError):
        edits("Dockerfile", "FROM materialize/console:1\n",
              (pin("dockerfile", "console"), NewValue("2")))


def test_reference_without_tag_is_listed_not_edited() -> None:
    with pytest.raises(PinNotFoundError) as exc:
        edits("Dockerfile", "FROM nginx\n", (pin("dockerfile", "nginx"), NewValue("1.27")))
    assert "nginx (line 1) has neither tag nor digest" in exc.value.one_line()


def test_two_spans_with_max_matches_one() -> None:
    text = "FROM nginx:1.25 AS a\nRUN true\nFROM nginx:1.25 AS b\n"
    with pytest.raises(PinCountError) as exc:
        edits("Dockerfile", text, (pin("dockerfile", "nginx"), NewValue("1.27")))
    assert "Dockerfile:1" in exc.value.message and "Dockerfile:3" in exc.value.message
    out = edits("Dockerfile", text, (pin("dockerfile", "nginx", None), NewValue("1.27")))
    assert out == text.replace("1.25", "1.27").encode()


def test_shared_arg_counts_once_when_both_pinned() -> None:
    text = "ARG V=1.25\nFROM nginx:${V} AS a\nFROM nginx:$V AS b\n"
    out = edits("Dockerfile", text, (pin("dockerfile", "nginx"), NewValue("1.27")))
    assert out == b"ARG V=1.27\nFROM nginx:${V} AS a\nFROM nginx:$V AS b\n"


def test_arg_shared_by_a_pinned_and_an_unpinned_image() -> None:
    text = "ARG V=1.25\nFROM nginx:${V} AS a\nFROM acme/proxy:${V}\n"
    with pytest.raises(PinAmbiguousError) as exc:
        edits("Dockerfile", text, (pin("dockerfile", "nginx"), NewValue("1.27")))
    assert "Dockerfile:1" in exc.value.message and "acme/proxy:1.25" in exc.value.message
    # both pinned to the same new text: one edit
    out = edits("Dockerfile", text, (pin("dockerfile", "nginx"), NewValue("1.27")),
                (pin("dockerfile", "acme/proxy"), NewValue("1.27")))
    assert out == text.replace("V=1.25", "V=1.27").encode()


def test_yaml_anchor_shared_by_two_images_is_ambiguous() -> None:
    text = ("a:\n  repository: acme/a\n  tag: &t 1.0\n"
            "b:\n  repository: acme/b\n  tag: *t\n")
    with pytest.raises(PinAmbiguousError):
        edits("values.yaml", text, (pin("helm-values", "acme/a"), NewValue("2.0")))


def test_two_pins_editing_one_span_differently() -> None:
    text = "FROM nginx:1.25\n"
    with pytest.raises(PinConflictError) as exc:
        edits("Dockerfile", text, (pin("dockerfile", "nginx"), NewValue("1.27")),
              (pin("dockerfile", "docker.io/library/nginx"), NewValue("1.28")))
    assert "Dockerfile:1" in exc.value.message
    same = edits("Dockerfile", text, (pin("dockerfile", "nginx"), NewValue("1.27")),
                 (pin("dockerfile", "docker.io/library/nginx"), NewValue("1.27")))
    assert same == b"FROM nginx:1.27\n"


@pytest.mark.parametrize(("text", "line", "what"), [
    ("ARG X=1\n\nFROM --platform=linux/amd64\n", 3, "FROM without an image"),
    ("FROM nginx:${TAG\n", 1, "unbalanced ${"),
    ("FROM alpine:3\nRUN <<EOF\necho hi\n", 2, "heredoc <<EOF is not terminated"),
    ("# syntax=a/b:1\n# syntax=a/b:2\nFROM x:1\n", 2, "repeated"),
    ("# escape=x\nFROM x:1\n", 1, "invalid escape"),
])
def test_malformed_dockerfile(text: str, line: int, what: str) -> None:
    with pytest.raises(PinParseError) as exc:
        edits("Dockerfile", text, (pin("dockerfile", "nginx"), NewValue("1")))
    assert exc.value.message.startswith(f"Dockerfile:{line}: ")
    assert what in exc.value.message


def test_continuation_at_end_of_file_is_not_malformed() -> None:
    out = edits("Dockerfile", "FROM nginx:1.25 \\", (pin("dockerfile", "nginx"), NewValue("2")))
    assert out == b"FROM nginx:2 \\"


def test_malformed_yaml_names_file_and_line() -> None:
    text = "image:\n  repository: acme/a\n  tag: [1.0\nother: x\n"
    with pytest.raises(PinParseError) as exc:
        edits("values.yaml", text, (pin("helm-values", "acme/a"), NewValue("2")))
    assert re.match(r"values\.yaml:[34]: malformed YAML", exc.value.message)


def test_not_utf8() -> None:
    data = b"FROM nginx:1\n# caf\xe9\n"
    with pytest.raises(PinParseError) as exc:
        compute_edits("Dockerfile", data, [(pin("dockerfile", "nginx"), NewValue("2"))])
    assert exc.value.message.startswith("Dockerfile:2: not UTF-8")


@pytest.mark.parametrize(("text", "pieces"), [
    ("ARG MAJOR=1\nARG MINOR=25\nFROM nginx:${MAJOR}.${MINOR}\n",
     'ARG MAJOR (line 1) "1" + literal "." (line 3) + ARG MINOR (line 2) "25"'),
    ("ARG V=1.25-alpine\nFROM nginx:${V%-alpine}\n", "${V…}"),
])
def test_unresolvable_names_the_pieces(text: str, pieces: str) -> None:
    with pytest.raises(PinUnresolvableError) as exc:
        edits("Dockerfile", text, (pin("dockerfile", "nginx"), NewValue("2.0")))
    assert pieces in exc.value.message


def test_stale_digest_is_never_kept() -> None:
    text = f"FROM nginx:1.25@{DIGEST}\n"
    with pytest.raises(PinUnresolvableError):
        edits("Dockerfile", text, (pin("dockerfile", "nginx"), NewValue("1.27")))
    new = "sha256:" + "cd" * 32
    out = edits("Dockerfile", text, (pin("dockerfile", "nginx"), NewValue("1.27", new)))
    assert out == f"FROM nginx:1.27@{new}\n".encode()


def test_applied_pin_is_counted_and_changes_nothing() -> None:
    data = b"FROM nginx:1.27\n"
    plan = plan_file("Dockerfile", data, [(pin("dockerfile", "nginx"), NewValue("1.27"))])
    assert plan.matches == {0: 1} and not plan.changed
    assert [(e.old, e.new, e.line) for e in plan.edits] == [("1.27", "1.27", 1)]


def test_byte_offsets_after_multibyte_text() -> None:
    data = "# café ☕\nFROM nginx:1.25\n".encode()
    (edit,) = compute_edits("Dockerfile", data, [(pin("dockerfile", "nginx"), NewValue("1.3"))])
    assert data[edit.start:edit.end] == b"1.25"
    assert apply_edits(data, [edit]) == "# café ☕\nFROM nginx:1.3\n".encode()


def test_chart_version_must_be_semver() -> None:
    spec = PinSpec(kind="chart", file="Chart.yaml", fields=("version",))
    with pytest.raises(PinError, match="not SemVer 2"):
        edits("Chart.yaml", "version: 1.0.0\n", (spec, NewValue("26.5", value="26.5")))


def test_pattern_needs_exactly_one_group() -> None:
    assert validate_pattern(r"tag: (\S+)").groups == 1
    for bad in (r"tag: \S+", r"(a)(b)", r"(unclosed"):
        with pytest.raises(ValidationError):
            validate_pattern(bad)


@pytest.mark.parametrize(("text", "quoted"), [
    ("1.10", True), ("1e3", True), ("010", True), ("0x1F", True), ("1_000", True),
    ("2024-01-01", True), ("1:20", True), ("on", True), ("n", True), ("~", True),
    ("a: b", True), ("a #b", True), ("-x", True), (" x", True),
    ("1.2.3", False), ("v26.5.0", False), ("26.5.0-dev.0", False), ("latest", False),
])
def test_plain_scalar_quoting(text: str, quoted: bool) -> None:
    assert needs_quotes(text) is quoted

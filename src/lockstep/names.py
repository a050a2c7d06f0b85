"""Validation of every name that reaches git, the filesystem or a process: checked before use."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from lockstep.errors import ValidationError

_SIMPLE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
_ITEM = re.compile(r"^q[0-9]+$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
# git check-ref-format rules plus a conservative character set: no shell metacharacters at all.
# '@' is allowed for monorepo tags such as api@1.2.3 (but never '@{' or a lone '@').
_REF_CHARS = re.compile(r"^[A-Za-z0-9._/+@-]+$")
# A Kubernetes object name (RFC 1123 subdomain); the 253-character limit is checked apart.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
                            r"(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")


def _simple_name(name: str, what: str) -> str:
    if not _SIMPLE.fullmatch(name) or ".." in name:
        raise ValidationError(
            f"invalid {what} {name!r}",
            "use lowercase letters, digits, '.', '_' or '-', starting and ending alphanumeric",
        )
    return name


def component_name(name: str) -> str:
    """A component name: lowercase letters, digits, '.', '_', '-'; starts and ends alphanumeric."""
    return _simple_name(name, "component name")


def configuration_name(name: str) -> str:
    """A configuration name: same alphabet as component names."""
    return _simple_name(name, "configuration name")


def stage_name(name: str) -> str:
    """A stage name: same alphabet as component names."""
    return _simple_name(name, "stage name")


def pool_name(name: str) -> str:
    """A runner pool's name (`[queue.pools]`, a stage's `pool`): same alphabet as stage names."""
    return _simple_name(name, "pool name")


def notifier_name(name: str) -> str:
    """A notifier name: same alphabet as component names; it binds pending deliveries."""
    return _simple_name(name, "notifier name")


def is_dns_subdomain(value: str) -> bool:
    """Whether `value` may name a Kubernetes object: a DNS subdomain of at most 253 characters."""
    return len(value) <= 253 and _DNS_SUBDOMAIN.fullmatch(value) is not None


def environment_name(value: str) -> str:
    """An Environment's metadata.name: a DNS subdomain, as `rollout apply` requires."""
    if not is_dns_subdomain(value):
        raise ValidationError(f"invalid environment name {value!r}",
                              "use lower-case letters, digits, '-' and '.', starting and "
                              "ending alphanumeric")
    return value


def ref_name(name: str, what: str = "ref name") -> str:
    """A git ref or tag name safe to pass as an argument (git check-ref-format, stricter)."""
    problem = _ref_problem(name)
    if problem:
        raise ValidationError(
            f"invalid {what} {name!r}: {problem}",
            "use letters, digits and '.', '_', '-', '/', '+', '@' only, e.g. v1.4.2 or api@1.4.2",
        )
    return name


def _ref_problem(name: str) -> str | None:
    if not name:
        return "it is empty"
    if name != name.strip() or any(c.isspace() for c in name):
        return "it contains whitespace"
    if name.startswith("-"):
        return "it starts with '-'"
    if not _REF_CHARS.fullmatch(name):
        return "it contains characters other than letters, digits, '.', '_', '-', '/', '+', '@'"
    if ".." in name or "//" in name:
        return "it contains '..' or '//'"
    if name == "@":
        return "git reserves '@' alone for HEAD"
    if name.startswith(("/", ".")) or name.endswith(("/", ".", ".lock")):
        return "it starts or ends with '/' or '.', or ends with '.lock'"
    if any(part.startswith(".") or part.endswith(".lock") for part in name.split("/")):
        return "a path component starts with '.' or ends with '.lock'"
    if len(name) > 200:
        return "it is longer than 200 characters"
    return None


def version(value: str) -> str:
    """A component version: a tag name in the component's repository."""
    return ref_name(value, "version")


def item_id(value: str) -> str:
    """A queue item id such as q12."""
    if not _ITEM.fullmatch(value):
        raise ValidationError(f"invalid item id {value!r}", "item ids look like q12")
    return value


def sha(value: str) -> str:
    """A full 40-hex commit SHA."""
    if not _SHA.fullmatch(value):
        raise ValidationError(f"invalid commit SHA {value!r}", "expected 40 lowercase hex digits")
    return value


def relative_path(value: str, what: str = "path") -> str:
    """A relative path inside a repository: no absolute paths, no '..', no leading '-'."""
    p = PurePosixPath(value)
    if (
        not value
        or value in (".", "./")
        or any(ord(c) < 32 for c in value)
        or p.is_absolute()
        or ".." in p.parts
        or value.startswith("-")
        or "\\" in value
        or "\0" in value
    ):
        raise ValidationError(
            f"invalid {what} {value!r}",
            "use a relative path inside the repository without '..'",
        )
    return value


_HEXLIKE = re.compile(r"[0-9a-fA-F]{4,64}")
_RESERVED_TAGS = frozenset({"@", "HEAD", "FETCH_HEAD", "ORIG_HEAD", "MERGE_HEAD"})


def release_tag(name: str, what: str = "release tag") -> str:
    """A tag lockstep creates: git's ref rules plus no name git could read as something else
    (a SHA-like hex string, HEAD, a full `refs/` name, non-ASCII)."""
    problem = None
    if not name.isascii():
        problem = "it is not ASCII"
    elif name in _RESERVED_TAGS:
        problem = f"{name!r} names a special ref in git"
    elif _HEXLIKE.fullmatch(name):
        problem = "4 to 64 hex digits read as an abbreviated commit SHA"
    elif name.startswith("refs/"):
        problem = "it starts with 'refs/' (give the tag's short name)"
    if problem:
        raise ValidationError(f"invalid {what} {name!r}: {problem}",
                              "use a name such as v26.5.0")
    return ref_name(name, what)


def pin_path(value: str, what: str = "pin file") -> str:
    """A configured pin path: relative POSIX, no empty, '.' or '..' segments."""
    relative_path(value, what)
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise ValidationError(f"invalid {what} {value!r}: empty, '.' or '..' segment",
                              "write a plain relative path such as charts/app/values.yaml")
    return value

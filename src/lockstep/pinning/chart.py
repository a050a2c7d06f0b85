"""Chart.yaml's top-level `version` and `appVersion`: the values a chart pin sets."""

from __future__ import annotations

import re

from ruamel.yaml.nodes import MappingNode, ScalarNode

from lockstep.errors import PinError, PinParseError
from lockstep.pinning import yaml_nodes
from lockstep.pinning.model import Traced
from lockstep.pinning.text import LineIndex

# semver.org's recommended expression, with the leading `v` Helm accepts
SEMVER = re.compile(
    r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?")


def check_version(path: str, value: str) -> None:
    """A chart's new `version` must be SemVer 2."""
    if not SEMVER.fullmatch(value):
        raise PinError(f"{path}: new chart version {value!r} is not SemVer 2",
                       "a chart version looks like 1.2.3 or v1.2.3-rc.1")


def fields(path: str, text: str, names: tuple[str, ...]) -> tuple[dict[str, Traced], list[str]]:
    """The traced values of the requested top-level fields, and every top-level key found."""
    docs = yaml_nodes.compose(path, text)
    if not docs or not isinstance(docs[0], MappingNode):
        raise PinParseError(f"{path}:1: Chart.yaml is not a mapping", "fix the chart's metadata")
    index = LineIndex(text)
    found: dict[str, Traced] = {}
    keys: list[str] = []
    for key, value in docs[0].value:
        if not isinstance(key, ScalarNode) or not isinstance(key.value, str):
            continue
        keys.append(key.value)
        if key.value in names and isinstance(value, ScalarNode) and key.value not in found:
            line = value.end_mark.line + 1
            got = yaml_nodes.traced(value, text, index, f"{key.value} (line {line})")
            if got is None:
                raise PinParseError(f"{path}:{line}: {key.value} is not a one-line scalar",
                                    "write it as `key: value` on one line")
            found[key.value] = got
    return found, keys

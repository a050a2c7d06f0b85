"""YAML documents as ruamel.yaml's composer sees them (nodes with source marks), and the exact
source span of a scalar's value, so edits are splices and files are never re-serialised."""

from __future__ import annotations

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

from lockstep.errors import PinParseError
from lockstep.pinning.model import Container, Piece, Quoting, Traced
from lockstep.pinning.text import LineIndex

MERGE_TAG = "tag:yaml.org,2002:merge"
_EMPTY = {"", "~", "null", "Null", "NULL"}


def compose(path: str, text: str) -> list[Node]:
    """Every document's root node; PinParseError with file and line when malformed."""
    try:
        return [doc for doc in YAML(typ="safe", pure=True).compose_all(text) if doc is not None]
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise PinParseError(f"{path}:{line}: malformed YAML: {what}",
                            "fix the YAML syntax") from None
    except YAMLError as exc:
        raise PinParseError(f"{path}: malformed YAML: {exc}", "fix the YAML syntax") from None


def is_empty(node: Node) -> bool:
    """A null or empty scalar (`""`, `''`, `~`, `null`, nothing)."""
    if not isinstance(node, ScalarNode):
        return False
    return node.value == "" or (node.style is None and node.value in _EMPTY)


def container(node: ScalarNode, text: str) -> Container | None:
    """The scalar's source span and quoting, when its source spells its value verbatim
    (single line, no escapes, not a block scalar); else None."""
    end = node.end_mark.index
    value = node.value
    if not isinstance(value, str) or "\n" in value:
        return None
    quoting: Quoting
    if node.style is None:
        quoting, inner_end = "plain", end
    elif node.style in ("'", '"'):
        quoting = "single" if node.style == "'" else "double"
        inner_end = end - 1
        if text[inner_end:end] != node.style:
            return None
    else:
        return None
    inner_start = inner_end - len(value)
    if text[inner_start:inner_end] != value:
        return None
    start = inner_start - (0 if quoting == "plain" else 1)
    if quoting != "plain" and text[start:inner_start] != node.style:
        return None
    if quoting == "plain" and not value:
        return None
    return Container(start, end, value, quoting)


def traced(node: ScalarNode, text: str, index: LineIndex, label: str,
           lo: int = 0, hi: int | None = None) -> Traced | None:
    """The characters [lo, hi) of a scalar's value as one traced piece, or None when the
    scalar's source is not verbatim."""
    box = container(node, text)
    if box is None:
        return None
    inner = box.start + (0 if box.quoting == "plain" else 1)
    hi = len(box.value) if hi is None else hi
    start = inner + lo
    piece = Piece(start, box.value[lo:hi], label, index.line(start), literal=False)
    return Traced((piece,), box)


def pairs(node: MappingNode, stack: tuple[int, ...] = ()) -> list[tuple[Node, Node]]:
    """The mapping's key/value pairs with merge keys (`<<`) resolved: merged pairs first,
    overridden by the mapping's own."""
    merged: dict[str, tuple[Node, Node]] = {}
    own: list[tuple[Node, Node]] = []
    for key, value in node.value:
        if key.tag == MERGE_TAG and id(node) not in stack:
            sources = value.value if not isinstance(value, MappingNode) else [value]
            for src in sources if isinstance(sources, list) else []:
                if isinstance(src, MappingNode):
                    for k, v in pairs(src, (*stack, id(node))):
                        merged.setdefault(_key(k), (k, v))
        else:
            own.append((key, value))
    result = {k: pair for k, pair in merged.items()}
    for key, value in own:
        result.pop(_key(key), None)
        result[_key(key)] = (key, value)
    return list(result.values())


def _key(node: Node) -> str:
    return node.value if isinstance(node, ScalarNode) and isinstance(node.value, str) \
        else f"#{id(node)}"

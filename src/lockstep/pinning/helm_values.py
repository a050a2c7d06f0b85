"""Image references in Helm values files: `{registry, repository, tag[, digest]}` mappings and
`*image: repo:tag` strings at any depth, every document, anchors and merge keys followed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from lockstep import imageref
from lockstep.errors import PinParseError
from lockstep.pinning import yaml_nodes
from lockstep.pinning.model import Reference, Traced
from lockstep.pinning.text import LineIndex

_MAX_VISITS = 1_000_000  # alias bombs end here
EMPTY_TAG_HINT = "tag is empty: the chart uses appVersion; pin Chart.yaml (kind chart)"


@dataclass
class _Walk:
    path: str
    text: str
    tag_keys: tuple[str, ...]
    index: LineIndex
    refs: list[Reference] = field(default_factory=list)
    visits: Counter[int] = field(default_factory=Counter)
    uses: Counter[int] = field(default_factory=Counter)
    nodes: dict[int, ScalarNode] = field(default_factory=dict)
    total: int = 0

    def walk(self, node: Node, stack: tuple[int, ...] = ()) -> None:
        self.total += 1
        if self.total > _MAX_VISITS:
            raise PinParseError(f"{self.path}: too many alias expansions",
                                "the YAML file expands to more than a million nodes")
        if id(node) in stack:
            return
        if isinstance(node, ScalarNode):
            self.visits[id(node)] += 1
            self.nodes[id(node)] = node
        elif isinstance(node, SequenceNode):
            for item in node.value:
                self.walk(item, (*stack, id(node)))
        elif isinstance(node, MappingNode):
            items = yaml_nodes.pairs(node)
            self._mapping(items)
            for _key, value in items:
                self.walk(value, (*stack, id(node)))

    def _scalar(self, node: Node | None) -> ScalarNode | None:
        if isinstance(node, ScalarNode) and isinstance(node.value, str):
            return node
        return None

    def _mapping(self, items: list[tuple[Node, Node]]) -> None:
        keyed = {k.value: v for k, v in items if isinstance(k, ScalarNode)
                 and isinstance(k.value, str)}
        repo = self._scalar(keyed.get("repository"))
        tag_key = next((k for k in self.tag_keys if k in keyed), None)
        if repo is not None and tag_key is not None and not yaml_nodes.is_empty(repo):
            self._map_ref(keyed, repo, tag_key)
        for key, value in items:
            name = key.value if isinstance(key, ScalarNode) else None
            scalar = self._scalar(value)
            if (isinstance(name, str) and name.lower().endswith("image") and scalar is not None
                    and not yaml_nodes.is_empty(scalar)):
                self._string_ref(scalar)

    def _use(self, *nodes: ScalarNode | None) -> tuple[tuple[int, int], ...]:
        spans = []
        for node in nodes:
            if node is None:
                continue
            self.uses[id(node)] += 1
            box = yaml_nodes.container(node, self.text)
            spans.append((box.start, box.end) if box else
                         (node.start_mark.index, node.end_mark.index))
        return tuple(spans)

    def _map_ref(self, keyed: dict[str, Node], repo: ScalarNode, tag_key: str) -> None:
        registry = self._scalar(keyed.get("registry"))
        tag_node = self._scalar(keyed.get(tag_key))
        digest_node = self._scalar(keyed.get("digest"))
        name = repo.value
        if registry is not None and not yaml_nodes.is_empty(registry):
            name = f"{registry.value}/{name}"
        line = repo.start_mark.line + 1
        if "{{" in name or (tag_node is not None and "{{" in tag_node.value):
            return
        uses = self._use(repo, registry, tag_node, digest_node)
        image = imageref.try_parse(name)
        if image is None or image.tag is not None or image.digest is not None:
            self.refs.append(Reference(name, line, None, uses=uses,
                                       note=f"line {line}: {name!r} is not a valid image name"))
            return
        if tag_node is None or yaml_nodes.is_empty(tag_node):
            self.refs.append(Reference(name, line, None, uses=uses,
                                       note=f"{name} (line {line}): {EMPTY_TAG_HINT}"))
            return
        tag_text = tag_node.value
        tag_line = tag_node.end_mark.line + 1
        text = f"{name}:{tag_text}"
        at = tag_text.find("@")
        tag: Traced | None
        digest: Traced | None = None
        if at >= 0:
            tag = self._traced(tag_node, f"{tag_key} (line {tag_line})", 0, at)
            digest = self._traced(tag_node, f"{tag_key} (line {tag_line})", at + 1)
        else:
            tag = self._traced(tag_node, f"{tag_key} (line {tag_line})")
        digest_key = False
        if digest_node is not None and at < 0:
            digest_key = True
            digest = self._traced(digest_node, f"digest (line {digest_node.end_mark.line + 1})")
        self.refs.append(Reference(text, tag_line, image, tag, digest, digest_key, uses=uses))

    def _traced(self, node: ScalarNode, label: str, lo: int = 0,
                hi: int | None = None) -> Traced:
        found = yaml_nodes.traced(node, self.text, self.index, label, lo, hi)
        if found is not None:
            return found
        return _unresolvable(node, label, lo, hi)

    def _string_ref(self, node: ScalarNode) -> None:
        value = node.value
        if "{{" in value:
            return
        line = node.end_mark.line + 1
        uses = self._use(node)
        image = imageref.try_parse(value)
        if image is None:
            return
        label = f"image (line {line})"
        tag = digest = None
        if image.tag is not None and image.tag_start is not None:
            tag = self._traced(node, label, image.tag_start, image.tag_start + len(image.tag))
        if image.digest is not None and image.digest_start is not None:
            digest = self._traced(node, label, image.digest_start)
        note = None
        if tag is None and digest is None:
            note = f"{value} (line {line}) has neither tag nor digest"
        self.refs.append(Reference(value, line, image, tag, digest, note=note, uses=uses))


def _unresolvable(node: ScalarNode, label: str, lo: int, hi: int | None) -> Traced:
    """A value whose source is not verbatim (escapes, block or multi-line scalar)."""
    from lockstep.pinning.model import Piece

    text = str(node.value)[lo:hi]
    return Traced((Piece(node.start_mark.index, text, f"{label}, a scalar written with escapes "
                         "or over several lines", node.start_mark.line + 1, literal=False,
                         opaque=True),))


def scan(path: str, text: str, tag_keys: tuple[str, ...]) -> list[Reference]:
    """The references of every document; a scalar node used more often than by references
    (an anchor also aliased elsewhere) gets unmatched uses, so editing it is ambiguous."""
    walk = _Walk(path, text, tag_keys, LineIndex(text))
    for doc in yaml_nodes.compose(path, text):
        walk.walk(doc)
    for node_id, used in walk.uses.items():
        extra = walk.visits[node_id] - used
        node = walk.nodes.get(node_id)
        if extra > 0 and node is not None:
            box = yaml_nodes.container(node, text)
            span = (box.start, box.end) if box else (node.start_mark.index, node.end_mark.index)
            for _ in range(extra):
                walk.refs.append(Reference(
                    str(node.value), node.start_mark.line + 1, None, uses=(span,),
                    note=f"line {node.start_mark.line + 1}: anchored value also used outside "
                         "an image reference"))
    return walk.refs

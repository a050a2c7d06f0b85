"""`lockstep pin`: pin image references in files without a release (spec §6.4)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lockstep.cli.common import JsonOpt, WorkspaceOpt, console, info, print_json
from lockstep.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from lockstep.pinning.model import FilePlan, Kind, NewValue, PinSpec

# The pinning engine (ruamel.yaml) is imported inside the command, so `--help` stays fast.

_KINDS = ("dockerfile", "helm-values", "chart", "regex")


def _kind_of(path: str, given: str | None) -> Kind:
    """The pin kind: `--kind`, else from the file's name."""
    if given is not None:
        if given not in _KINDS:
            raise UsageError(f"--kind {given!r} is not a pin kind",
                             f"use one of {', '.join(_KINDS)}")
        return given  # type: ignore[return-value]
    name = Path(path).name
    if name == "Chart.yaml":
        raise UsageError(f"{path}: Chart.yaml needs --kind",
                         "pass --kind chart (version/appVersion) or --kind helm-values")
    if name in ("Dockerfile", "Containerfile") or name.endswith(".Dockerfile"):
        return "dockerfile"
    if name.endswith((".yaml", ".yml")):
        return "helm-values"
    raise UsageError(f"{path}: cannot tell the pin kind from the name", "pass --kind")


def _parse_images(images: list[str]) -> list[tuple[str, str, str | None]]:
    """`NAME=TAG[@sha256:…]` → (name, tag, digest), validated."""
    from lockstep import imageref

    parsed = []
    for item in images:
        name, eq, value = item.partition("=")
        if not eq or not name or not value:
            raise UsageError(f"--image {item!r} is not NAME=TAG", "e.g. --image nginx=1.27.0")
        ref = imageref.parse(name, "--image name")
        if ref.tag is not None or ref.digest is not None:
            raise UsageError(f"--image name {name!r} has a tag or digest",
                             "write the name alone before `=`")
        tag, _, digest = value.partition("@")
        if digest and not imageref.DIGEST.fullmatch(digest):
            raise UsageError(f"--image {item!r}: digest {digest!r} is not algorithm:hex",
                             "write NAME=TAG@sha256:<64 hex digits>")
        parsed.append((name, tag, digest or None))
    return parsed


def _pins(path: str, kind: Kind, images: list[tuple[str, str, str | None]],
          pattern: str | None, add_digest: bool,
          max_matches: int | None) -> list[tuple[PinSpec, NewValue]]:
    from lockstep import imageref
    from lockstep.pinning.model import NewValue, PinSpec
    from lockstep.pinning.regex_pin import validate_pattern

    if kind in ("chart", "regex"):
        if len(images) != 1:
            raise UsageError(f"--kind {kind} takes exactly one --image", "its TAG is the value")
        _name, tag, digest = images[0]
        compiled = None
        if kind == "regex":
            if pattern is None:
                raise UsageError("--kind regex needs --pattern", "e.g. --pattern 'tag: (.*)'")
            compiled = validate_pattern(pattern)
        spec = PinSpec(kind=kind, file=path, pattern=compiled, max_matches=max_matches)
        return [(spec, NewValue(tag, digest, tag))]
    for _name, tag, _digest in images:
        if not imageref.image_tag_valid(tag):
            raise UsageError(f"--image tag {tag!r} is not a valid image tag",
                             "tags are [A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
    return [(PinSpec(kind=kind, file=path, image=imageref.parse(name), max_matches=max_matches,
                     digest=add_digest), NewValue(tag, digest))
            for name, tag, digest in images]


def _diff(shown: str, old: bytes, new: bytes) -> str:
    import difflib

    lines = difflib.unified_diff(old.decode("utf-8").splitlines(keepends=True),
                                 new.decode("utf-8").splitlines(keepends=True),
                                 fromfile=f"a/{shown}", tofile=f"b/{shown}")
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _registry_digests(images: list[tuple[str, str, str | None]],
                      ws_dir: Path) -> list[tuple[str, str, str | None]]:
    """Fill in each image's digest from its registry (`--digest`), as `release cut` reads
    registries: `[registries."host"]` of the workspace's lockstep.toml when there is one."""
    from lockstep import config as config_mod
    from lockstep import imageref
    from lockstep.release.artifacts import Artifacts

    root = ws_dir.resolve()
    has_config = (root / config_mod.CONFIG_FILE).is_file()
    cfg = config_mod.load(root) if has_config else config_mod.parse("")
    registries = Artifacts(cfg, root)
    out: list[tuple[str, str, str | None]] = []
    try:
        for name, tag, digest in images:
            if digest is None:
                ref = imageref.parse(name)
                answer = registries.source(ref.registry).check(ref.repository, tag,
                                                               first_or_last=True)
                if not answer.found or answer.digest is None:
                    raise NotFoundError(
                        f"{name}:{tag} is not in registry {ref.registry} ({answer.detail})",
                        "check the name and tag, or give the digest: --image NAME=TAG@sha256:…")
                digest = answer.digest
            out.append((name, tag, digest))
    finally:
        registries.close()
    return out


def pin(
    files: Annotated[list[str], typer.Argument(help="Files to pin.", show_default=False)],
    image: Annotated[list[str], typer.Option(
        "--image", help="NAME=TAG[@sha256:…]: the image as written in the files (repeatable).",
        show_default=False)],
    digest: Annotated[bool, typer.Option(
        "--digest", help="Ask the registry for each tag's digest ([registries] of the "
        "lockstep.toml in -C DIR, when there is one).")] = False,
    add_digest: Annotated[bool, typer.Option(
        "--add-digest", help="Add the digest to references that have none.")] = False,
    max_matches: Annotated[int | None, typer.Option(
        "--max-matches", help="At most this many places per image and file (default: any).",
        show_default=False)] = None,
    kind: Annotated[str | None, typer.Option(
        "--kind", help="dockerfile | helm-values | chart | regex (default: from the name).",
        show_default=False)] = None,
    pattern: Annotated[str | None, typer.Option(
        "--pattern", help="With --kind regex: a line pattern with one capture group.",
        show_default=False)] = None,
    check: Annotated[bool, typer.Option(
        "--check", help="Change nothing; print a diff and exit 1 if anything would change.")
    ] = False,
    json_out: JsonOpt = False,
    ws_dir: WorkspaceOpt = Path("."),
) -> None:
    """Pin image references in Dockerfiles, Helm values, Chart.yaml or any text file."""
    from lockstep.pinning import plan as pinplan
    from lockstep.pinning import safe_write

    if max_matches is not None and max_matches < 1:
        raise UsageError("--max-matches must be at least 1", "e.g. --max-matches 2")
    images = _parse_images(image)
    if digest:
        images = _registry_digests(images, ws_dir)
    targets = [safe_write.resolve(f) for f in files]
    plans: list[tuple[safe_write.Target, bytes, FilePlan, str]] = []
    for target in targets:
        file_kind = _kind_of(target.shown, kind)
        data = safe_write.read(target)
        pins = _pins(target.shown, file_kind, images, pattern, add_digest, max_matches)
        plans.append((target, data, pinplan.plan_file(target.shown, data, pins), file_kind))
    _require_matches(plans)
    results = []
    for target, data, plan, _kind in plans:
        new = pinplan.apply_edits(data, plan.edits)
        results.append((target, data, new, plan))
    for _t, _d, _n, plan in results:
        for warning in plan.warnings:
            info(f"warning: {warning}")
    if not check:
        for target, data, new, _plan in results:
            if new != data:
                safe_write.replace(target, new)
    changed = any(new != data for _t, data, new, _p in results)
    if json_out:
        print_json({"changed": changed, "check": check, "files": [
            {"file": t.shown, "kind": k, "changed": n != d,
             "edits": [e.to_json() for e in p.edits]}
            for (t, d, n, p), (_t, _d, _p, k) in zip(results, plans, strict=True)]})
    elif check:
        sys.stdout.write("".join(_diff(t.shown, d, n) for t, d, n, _p in results if n != d))
    else:
        for _t, _d, _n, plan in results:
            for e in plan.edits:
                console.print(f"{e.file}:{e.line}  {e.old} → {e.new}" if e.changed
                              else f"{e.file}:{e.line}  {e.new} (already pinned)")
    if check and changed:
        raise typer.Exit(1)


def _require_matches(plans: Sequence[tuple[object, bytes, FilePlan, str]]) -> None:
    """Each image must be found in some file; a chart or regex pin in every file."""
    first_missing: dict[int, list[Exception]] = {}
    found: dict[int, bool] = {}
    for _t, _d, plan, kind in plans:
        for i, count in plan.matches.items():
            found[i] = found.get(i, False) or count > 0
        for i, error in plan.missing.items():
            if kind in ("chart", "regex"):
                raise error
            first_missing.setdefault(i, []).append(error)
    for i, errors in sorted(first_missing.items()):
        if not found.get(i):
            raise errors[0]

"""`lockstep rollout …`: Environment rollouts (spec rollouts.md): `hash`, and `apply`, `status`,
`promote`, `history` on the workspace's store.

Each command imports the rollout modules (pydantic, ruamel.yaml) inside its body, so that
`lockstep --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from lockstep.cli.common import JsonOpt, WorkspaceOpt, info, print_json

app = typer.Typer(help="Roll Environments out in hash-triggered generations.",
                  no_args_is_help=True)

ApiMode = Literal["v1alpha2", "v1alpha1"]
ApiOpt = Annotated[ApiMode, typer.Option(
    "--api", "--api-version",
    help="The API mode: v1alpha2, or v1alpha1 (only v1alpha1 objects, stored as they are; a "
         "rollout happens when spec.requestRollout changes). Controller and objects must agree.")]
FileArg = Annotated[Path, typer.Argument(help="An Environment as YAML or JSON ('-' for stdin).",
                                         show_default=False)]


def read_environment(file: Path) -> dict[str, object]:
    """The Environment in FILE (or stdin for `-`), checked to be one of a supported version."""
    from lockstep.rollout.convert import ConversionError
    from lockstep.rollout.resource import API_VERSIONS, KIND, V1ALPHA2, load

    obj = load(sys.stdin.read(), "<stdin>") if str(file) == "-" else load(file)
    if obj.get("kind") != KIND:
        raise ConversionError(f"{file}: kind {obj.get('kind')!r} is not {KIND}",
                              f"write kind: {KIND}")
    if obj.get("apiVersion") not in API_VERSIONS:
        raise ConversionError(f"{file}: apiVersion {obj.get('apiVersion')!r} is not supported",
                              f"use {V1ALPHA2} or lockstep.dev/v1alpha1")
    return obj


@app.command("hash")
def hash_(file: FileArg, json_out: JsonOpt = False) -> None:
    """Print the rollout hash of an Environment of either version (spec §3)."""
    from lockstep.rollout.hashing import rollout_hash, uuid5_of

    obj = read_environment(file)
    h = rollout_hash(obj)
    if json_out:
        print_json({"apiVersion": obj["apiVersion"], "rolloutHash": h,
                    "requestRollout": uuid5_of(h)})
    else:
        sys.stdout.write(h + "\n")


NameArg = Annotated[str, typer.Argument(help="The Environment's metadata.name.",
                                        show_default=False)]


@app.command("apply")
def apply(file: FileArg, ws_dir: WorkspaceOpt = Path("."), api: ApiOpt = "v1alpha2") -> None:
    """Create or update an Environment for the controller: validated, then stored in the API
    mode's version (v1alpha2 by default; a file of the other version is converted)."""
    from lockstep.errors import LockstepError, UsageError
    from lockstep.rollout.convert import convert
    from lockstep.rollout.resource import GROUP, validate
    from lockstep.rollout.store import open_environment_store

    obj = read_environment(file)
    validate(obj)
    meta = obj["metadata"]
    name = meta.get("name") if isinstance(meta, dict) else None
    if not name:
        raise UsageError("metadata.name: missing", "name the Environment")
    version = f"{GROUP}/{api}"
    store = open_environment_store(ws_dir)
    try:
        current: object = store.get(str(name)).obj
    except LockstepError:  # absent, or stored unreadable: the put replaces it
        current = None
    stored_version = current.get("apiVersion") if isinstance(current, dict) else None
    if stored_version not in (None, version):
        raise UsageError(f"environment {name} is stored as {stored_version}, not {version}",
                         f"the workspace runs in one API mode: apply it with --api "
                         f"{str(stored_version).rsplit('/', 1)[-1]}")
    stored = store.put(convert(obj, version))
    info(f"environment {stored.name} stored as {version} (generation {stored.generation}, "
         f"resourceVersion {stored.resource_version})")


@app.command("status")
def status(name: NameArg, ws_dir: WorkspaceOpt = Path("."), json_out: JsonOpt = False,
           api: Annotated[ApiMode | None, typer.Option(
               "--api", "--api-version",
               help="Show the object converted to this version (default: as stored).")] = None,
           ) -> None:
    """Print an Environment's rollout status (the whole object with --json)."""
    from lockstep.rollout.convert import convert
    from lockstep.rollout.resource import GROUP, V1ALPHA1, up_to_date
    from lockstep.rollout.store import open_environment_store

    stored = open_environment_store(ws_dir).get(name)
    obj: Any = stored.full()
    if api is not None:
        obj = convert(obj, f"{GROUP}/{api}")
    if json_out:
        print_json(obj)
        return
    raw = obj.get("status") if isinstance(obj, dict) else None
    st: dict[str, Any] = raw if isinstance(raw, dict) else {}
    spec = obj.get("spec") if isinstance(obj, dict) else None
    cond = up_to_date(st)
    version = obj.get("apiVersion") if isinstance(obj, dict) else None
    lines = [f"environment:        {name} ({version}, generation {stored.generation}, observed "
             f"{st.get('observedGeneration', '-')})",
             f"active generation:  {st.get('activeGeneration', '-')}",
             f"condition:          {cond.get('reason', '-')} ({cond.get('status', '-')}) since "
             f"{cond.get('lastTransitionTime', '-')}",
             f"message:            {cond.get('message', '-')}"]
    if raw is not None and not isinstance(raw, dict):
        lines.append("status:             unreadable (the controller recreates it)")
    if version == V1ALPHA1:
        request = spec.get("requestRollout") if isinstance(spec, dict) else None
        lines += [f"requested rollout:  {request or '-'}",
                  f"completed request:  {st.get('lastCompletedRolloutRequest') or '-'}",
                  f"resources hash:     {st.get('resourcesHash') or '-'}"]
    else:
        lines += [f"requested hash:     {st.get('requestedRolloutHash') or '-'}",
                  f"completed hash:     {st.get('lastCompletedRolloutHash') or '-'}"]
    lines.append(f"completed release:  {st.get('lastCompletedRelease') or '-'}")
    sys.stdout.write("\n".join(lines) + "\n")


@app.command("promote")
def promote(name: NameArg, force: Annotated[bool, typer.Option(
        "--force", help="Skip catch-up and promote now (sets spec.forcePromote).")] = False,
            ws_dir: WorkspaceOpt = Path(".")) -> None:
    """Force-promote the rollout in progress: spec.forcePromote := status.requestedRolloutHash
    (v1alpha1: := spec.requestRollout)."""
    from lockstep.errors import UsageError
    from lockstep.rollout.promote import force_promote
    from lockstep.rollout.store import open_environment_store

    if not force:
        raise UsageError("promote skips the new generation's catch-up",
                         "pass --force to confirm; without it a ManuallyPromote rollout waits")
    requested = force_promote(open_environment_store(ws_dir), name)
    info(f"environment {name}: forcePromote set to {requested}")


@app.command("history")
def history(name: NameArg, ws_dir: WorkspaceOpt = Path("."), json_out: JsonOpt = False) -> None:
    """Print an Environment's condition changes, oldest first."""
    from datetime import UTC, datetime

    from lockstep.rollout.store import open_environment_store

    rows = open_environment_store(ws_dir).history(name)
    if json_out:
        print_json(rows)
        return
    for row in rows:
        at = datetime.fromtimestamp(row["at"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sys.stdout.write(f"{at}  gen {row['generation']:<3} active {row['activeGeneration']!s:<3} "
                         f"{row['reason']:<18} {row['message']}\n")


@app.command("render")
def render(
    file: FileArg,
    kubernetes: Annotated[bool, typer.Option(
        "--kubernetes", help="Render the Kubernetes objects (the only target so far).")] = False,
    generation: Annotated[int, typer.Option(
        "--generation", min=1, help="The deploy generation to render.")] = 1,
    json_out: JsonOpt = False,
    ws_dir: WorkspaceOpt = Path("."),
) -> None:
    """Print the objects a Kubernetes driver applies for one generation (StatefulSet and
    Service per stateful component, the stable Service, stateless Deployments); a release is
    resolved in the integration repo -C DIR."""
    from lockstep.errors import UsageError
    from lockstep.rollout.render import render as render_objects
    from lockstep.rollout.resource import dump

    if not kubernetes:
        raise UsageError("say what to render", "add --kubernetes")
    obj = read_environment(file)
    release = None
    spec = obj.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("release"), str):
        from lockstep.rollout.release_source import ReleaseSource

        release = ReleaseSource(ws_dir, ws_dir / ".lockstep" / "rollouts").resolve(
            spec["release"])
    objects = render_objects(obj, generation, release)
    if json_out:
        print_json({"apiVersion": "v1", "kind": "List", "items": objects})
    else:
        sys.stdout.write("---\n".join(dump(o, "yaml") for o in objects))

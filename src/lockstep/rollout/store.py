"""Where `Environment` objects live locally (spec/rollouts.md §2.1): SQLite beside the queue's
store, with the API server's guarantees — `metadata.generation` grows on every spec change, spec
and status are written separately, every write is conditional on the `resourceVersion` read, and
objects are stored as v1alpha2."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, select

from lockstep.errors import NotFoundError, StateError
from lockstep.queue.store import sqlite_engine

metadata = MetaData()
environments = Table(
    "environments", metadata,
    Column("name", String(253), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("resource_version", Integer, nullable=False),
    Column("object", Text, nullable=False),  # apiVersion, kind, metadata, spec (v1alpha2)
    Column("status", Text),  # JSON, or NULL before the controller's first pass
    Column("updated_at", Float, nullable=False),
)
history = Table(
    "environment_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(253), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("generation", Integer, nullable=False),  # metadata.generation of the object
    Column("reason", String(64)),
    Column("message", Text),
    Column("active_generation", Integer),
    Column("requested_hash", String(64)),
    Column("completed_hash", String(64)),
)


class ConflictError(StateError):
    """The object changed since it was read (its resourceVersion moved): read again, retry."""


@dataclass(frozen=True)
class Stored:
    """One stored object: the v1alpha2 object with its status and server-side metadata."""

    name: str
    generation: int
    resource_version: int
    obj: dict[str, Any]
    status: dict[str, Any] | None

    def full(self) -> dict[str, Any]:
        """The object as a client reads it: metadata.generation/resourceVersion and status."""
        out = copy.deepcopy(self.obj)
        if not isinstance(out, dict):
            return out  # a hand-edited row: the reconciler reports it
        meta = out.setdefault("metadata", {})
        if isinstance(meta, dict):
            meta["generation"] = self.generation
            meta["resourceVersion"] = str(self.resource_version)
        if self.status is not None:
            out["status"] = copy.deepcopy(self.status)
        return out


class EnvironmentStore:
    """The local object store of Environments (one SQLite file per workspace)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = sqlite_engine(path)
        metadata.create_all(self.engine)

    def get(self, name: str) -> Stored:
        """The stored object, or NotFoundError listing the known names."""
        with self.engine.connect() as c:
            row = c.execute(select(environments).where(environments.c.name == name)).first()
        if row is None:
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"no environment {name!r}",
                                f"environments: {known}; create one with `lockstep rollout "
                                "apply FILE`")
        try:
            obj = json.loads(row.object)
        except (TypeError, ValueError) as exc:
            raise StateError(f"environment {name!r} is stored unreadable: {exc}",
                             "write it again with `lockstep rollout apply FILE`") from None
        return Stored(row.name, row.generation, row.resource_version, obj, _status(row.status))

    def names(self) -> list[str]:
        """Every stored environment's name."""
        with self.engine.connect() as c:
            return [r[0] for r in c.execute(select(environments.c.name)
                                            .order_by(environments.c.name))]

    def put(self, obj: dict[str, Any], expected_rv: int | None = None) -> Stored:
        """Create or update the object's metadata and spec (never its status).

        `metadata.generation` grows only when the spec changed; `resourceVersion` on any change.
        With `expected_rv`, the write happens only if the stored version is still that one.
        """
        name = str(obj["metadata"]["name"])
        body = _body(obj)
        with self.engine.begin() as c:
            row = c.execute(select(environments).where(environments.c.name == name)).first()
            if row is None:
                if expected_rv not in (None, 0):
                    raise ConflictError(f"environment {name!r} does not exist any more",
                                        "read it again")
                c.execute(environments.insert().values(
                    name=name, generation=1, resource_version=1, object=_dumps(body),
                    status=None, updated_at=time.time()))
                return Stored(name, 1, 1, body, None)
            if expected_rv is not None and row.resource_version != expected_rv:
                raise ConflictError(f"environment {name!r} changed since it was read",
                                    "read it again and retry")
            old = _loads(row.object)
            if old == body:
                return Stored(name, row.generation, row.resource_version, old,
                              _status(row.status))
            old_spec = old.get("spec") if isinstance(old, dict) else old
            generation = row.generation + (1 if old_spec != body.get("spec") else 0)
            rv = row.resource_version + 1
            c.execute(environments.update().where(environments.c.name == name).values(
                generation=generation, resource_version=rv, object=_dumps(body),
                updated_at=time.time()))
            return Stored(name, generation, rv, body, _status(row.status))

    def write_status(self, name: str, status: dict[str, Any], expected_rv: int) -> int:
        """Replace the status if the object is still at `expected_rv`; the new resourceVersion.

        A changed UpToDate condition is appended to the history.
        """
        with self.engine.begin() as c:
            row = c.execute(select(environments).where(environments.c.name == name)).first()
            if row is None or row.resource_version != expected_rv:
                raise ConflictError(f"environment {name!r} changed since it was read",
                                    "the controller reads it again")
            rv = int(row.resource_version) + 1
            c.execute(environments.update().where(environments.c.name == name).values(
                status=_dumps(status), resource_version=rv, updated_at=time.time()))
            old = _status(row.status)
            cond, before = _condition(status), _condition(old if isinstance(old, dict) else {})
            if cond is not None and (before is None or _strip_time(cond) != _strip_time(before)):
                c.execute(history.insert().values(
                    name=name, at=time.time(), generation=row.generation,
                    reason=cond.get("reason"), message=cond.get("message"),
                    active_generation=status.get("activeGeneration"),
                    requested_hash=status.get("requestedRolloutHash"),
                    completed_hash=status.get("lastCompletedRolloutHash")))
            return rv

    def rewrite(self, name: str, full: dict[str, Any], expected_rv: int) -> int:
        """Replace object and status together, keeping `metadata.generation` (a storage-version
        migration rewrites an object unchanged in meaning); the new resourceVersion."""
        body = _body(full)
        status = full.get("status")
        with self.engine.begin() as c:
            row = c.execute(select(environments).where(environments.c.name == name)).first()
            if row is None or row.resource_version != expected_rv:
                raise ConflictError(f"environment {name!r} changed since it was read",
                                    "read it again and retry")
            rv = int(row.resource_version) + 1
            c.execute(environments.update().where(environments.c.name == name).values(
                object=_dumps(body), status=None if status is None else _dumps(status),
                resource_version=rv, updated_at=time.time()))
            return rv

    def history(self, name: str) -> list[dict[str, Any]]:
        """The condition changes of one environment, oldest first."""
        self.get(name)
        with self.engine.connect() as c:
            rows = c.execute(select(history).where(history.c.name == name)
                             .order_by(history.c.id)).all()
        return [{"at": r.at, "generation": r.generation, "reason": r.reason,
                 "message": r.message, "activeGeneration": r.active_generation,
                 "requestedRolloutHash": r.requested_hash,
                 "lastCompletedRolloutHash": r.completed_hash} for r in rows]


def open_environment_store(ws_dir: Path) -> EnvironmentStore:
    """The workspace's Environment store, `<workspace>/.lockstep/rollouts.db` (created on first
    use), as the CLI and the server open it."""
    from lockstep.rollout.controller import store_path  # the controller imports this module

    return EnvironmentStore(store_path(ws_dir))


def _body(obj: dict[str, Any]) -> dict[str, Any]:
    """What the object column holds: the object without status and server-side metadata."""
    body = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    meta = body.setdefault("metadata", {})
    for key in ("generation", "resourceVersion"):
        meta.pop(key, None)
    return body


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _loads(text: str) -> Any:
    """A stored JSON column; its raw text if a hand edit left it unparsable."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _status(text: str | None) -> Any:
    """A stored status as written, None when absent. One a hand edit garbled (not JSON, or not
    an object) is returned as it is: the controller recreates it (D0) like a missing one."""
    return _loads(text) if text else None


def _condition(status: dict[str, Any]) -> dict[str, Any] | None:
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "UpToDate":
            return cond
    return None


def _strip_time(cond: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cond.items() if k != "lastTransitionTime"}

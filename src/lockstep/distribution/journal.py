"""The distribution journal: one row per integration release tag, with its artifacts.

The tables live in the queue's store (same database, same transactions, so a failure and its
notification are recorded together) but in their own MetaData, created on first use: they add
tables without changing the queue's schema version.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)

from lockstep import names
from lockstep.errors import NotFoundError
from lockstep.queue import schema as queue_schema
from lockstep.queue.store import Store

# pending: recorded with its landing, not started; building: the command runs; built: artifacts
# recorded, not published; publishing: being published; published: done; failed: see error.
STATES = ("pending", "building", "built", "publishing", "published", "failed")
UNFINISHED = ("pending", "building", "built", "publishing")

metadata = MetaData()

distributions = Table(
    "distributions",
    metadata,
    Column("tag", String(200), primary_key=True),
    Column("landing_id", Integer, nullable=False),  # the order of releases: newer is larger
    Column("item_seq", Integer),
    Column("commit_sha", String(40), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("manifest_digest", String(80)),
    Column("holder", String(128)),  # host:pid of the process building or publishing it
    Column("holder_started", Float),
    Column("pid", Integer),  # the command's process group leader while it runs
    Column("pid_started", Float),
    Column("log", Text),
    Column("error", Text),
    Column("published_to", Text),
    Column("infra_tries", Integer),  # infrastructure faults since the last success
    Column("retry_at", Float),  # no automatic retry before this time (after such a fault)
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

artifacts = Table(
    "dist_artifacts",
    metadata,
    Column("tag", String(200), primary_key=True),
    Column("path", Text, primary_key=True),
    Column("size", Integer().with_variant(BigInteger(), "postgresql"), nullable=False),
    Column("sha256", String(64), nullable=False),
)


@dataclass(frozen=True)
class Artifact:
    """One built file: its path relative to the distribution directory, size and SHA-256."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def ensure_tables(store: Store) -> None:
    """Create the distribution tables in the store if they are missing (idempotent)."""
    with store.tx() as c:
        metadata.create_all(c, checkfirst=True)
        have = {col["name"] for col in inspect(c).get_columns("distributions")}
        for name, kind in (("infra_tries", "INTEGER"), ("retry_at", "FLOAT")):
            if name not in have:  # a store from before infrastructure retries
                c.execute(text(f"ALTER TABLE distributions ADD COLUMN {name} {kind}"))


def add_pending(c: Connection, tag: str, landing_id: int, item_seq: int | None,
                commit: str) -> None:
    """Record that tag needs a distribution (inside the landing's own transaction)."""
    if c.execute(select(distributions.c.tag).where(distributions.c.tag == tag)).first():
        return
    now = time.time()
    c.execute(insert(distributions).values(
        tag=tag, landing_id=landing_id, item_seq=item_seq, commit_sha=commit, state="pending",
        attempts=0, created_at=now, updated_at=now))


def row(c: Connection, tag: str) -> dict[str, Any] | None:
    """The journal row of tag, if any."""
    found = c.execute(select(distributions).where(distributions.c.tag == tag)).first()
    return dict(found._mapping) if found else None


def rows(c: Connection) -> list[dict[str, Any]]:
    """Every journal row, oldest release first."""
    return [dict(r._mapping) for r in c.execute(
        select(distributions).order_by(distributions.c.landing_id, distributions.c.tag))]


def unfinished(c: Connection, now: float | None = None) -> list[dict[str, Any]]:
    """Rows a build or publish has yet to finish, oldest release first; with `now`, only those
    due (an infrastructure fault's backoff has passed)."""
    query = select(distributions).where(distributions.c.state.in_(UNFINISHED))
    if now is not None:
        query = query.where(or_(distributions.c.retry_at.is_(None),
                                distributions.c.retry_at <= now))
    return [dict(r._mapping) for r in c.execute(query.order_by(distributions.c.landing_id))]


def set_state(c: Connection, tag: str, state: str, **values: Any) -> None:
    """Move tag's row to state (with other column values)."""
    assert state in STATES
    c.execute(update(distributions).where(distributions.c.tag == tag)
              .values(state=state, updated_at=time.time(), **values))


def set_values(c: Connection, tag: str, **values: Any) -> None:
    """Set columns of tag's row without changing its state."""
    c.execute(update(distributions).where(distributions.c.tag == tag).values(**values))


def replace_artifacts(c: Connection, tag: str, found: list[Artifact]) -> None:
    """The artifacts of tag's latest build (those of earlier tries are dropped)."""
    c.execute(delete(artifacts).where(artifacts.c.tag == tag))
    for a in found:
        c.execute(insert(artifacts).values(tag=tag, path=a.path, size=a.size, sha256=a.sha256))


def artifacts_of(c: Connection, tag: str) -> list[Artifact]:
    """The recorded artifacts of tag, by path."""
    return [Artifact(r.path, r.size, r.sha256) for r in c.execute(
        select(artifacts).where(artifacts.c.tag == tag).order_by(artifacts.c.path))]


def newest_published(c: Connection) -> int | None:
    """The landing id of the newest published release."""
    found = c.execute(select(distributions.c.landing_id)
                      .where(distributions.c.state == "published")
                      .order_by(distributions.c.landing_id.desc()).limit(1)).first()
    return int(found[0]) if found else None


def landed(c: Connection, tag: str) -> dict[str, Any]:
    """The landing row of an integration release tag, or a one-line error."""
    found = c.execute(select(queue_schema.landings).where(
        queue_schema.landings.c.tag_name == tag,
        queue_schema.landings.c.state == "landed")).first()
    if found is None:
        raise NotFoundError(f"no integration release {tag!r} was landed by this queue",
                            "see `lockstep dist list` or `lockstep queue status --all`")
    return dict(found._mapping)


def decode(r: dict[str, Any], found: list[Artifact]) -> dict[str, Any]:
    """A row and its artifacts as the JSON `dist show` prints."""
    out = {k: r[k] for k in ("tag", "state", "commit_sha", "manifest_digest", "attempts", "log",
                             "error", "updated_at", "retry_at")}
    out["infra_tries"] = r["infra_tries"] or 0
    out["published_to"] = json.loads(r["published_to"]) if r["published_to"] else None
    out["artifacts"] = [a.to_dict() for a in found]
    return out


def shown(store: Store, tag: str) -> dict[str, Any]:
    """One distribution as `dist show --json` prints it (and the API serves it); NotFoundError
    when none of `tag` is recorded."""
    names.ref_name(tag, "tag")
    with store.read() as c:
        r = row(c, tag)
        if r is None:
            raise NotFoundError(f"no distribution of {tag!r} is recorded",
                                "see `lockstep dist list`; `lockstep dist build TAG` builds one")
        return decode(r, artifacts_of(c, tag))

"""The queue's tables (SQLAlchemy Core), shared by the SQLite and PostgreSQL stores.

Times are float Unix seconds and JSON is text on both; strings are unbounded on PostgreSQL as
they are on SQLite.

Version 2 binds outbox rows to a notifier's name (version 1 stored its list position) and adds
the indexes that keep the live queue and the newest history cheap however long the history.
Version 3 adds what the pipeline scheduler reads and writes: item positions and batches,
candidates, the runs of candidates, runners, and the queue's pipeline counters.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from lockstep.queue.model import TERMINAL, State

SCHEMA_VERSION = 4
# The partial indexes below and the queries that use them must spell these lists identically
# (as literals): that is how SQLite matches a query to a partial index.
FINISHED_STATES = tuple(sorted(s.value for s in TERMINAL))
LIVE_STATES = tuple(s.value for s in State if s not in TERMINAL)
metadata = MetaData()


def _str(length: int) -> String:
    """VARCHAR(length) on SQLite, which never enforces the length, and an unbounded VARCHAR on
    PostgreSQL, which would: a long host name or version then behaves the same on both."""
    return String(length).with_variant(String(), "postgresql")


# Unix seconds outgrow PostgreSQL's 4-byte INTEGER in 2038 (SQLite's INTEGER is 8 bytes already).
_EPOCH_SECONDS = Integer().with_variant(BigInteger(), "postgresql")

schema_info = Table(
    "schema_info",
    metadata,
    Column("version", Integer, primary_key=True),
)

queues = Table(
    "queues",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("mode", _str(16), nullable=False, default="serial"),
    Column("paused", Integer, nullable=False, default=0),
    Column("paused_reason", _str(64)),
    Column("draining", Integer, nullable=False, default=0),
    Column("infra_streak", Integer, nullable=False, default=0),
    Column("landing_holder", _str(128)),
    Column("landing_epoch", Integer, nullable=False, default=0),
    Column("landing_expires_at", Float),
    Column("lease_seq", Integer, nullable=False, default=0),
    # Version 3: the pipeline scheduler's counters (QueueSnap); window NULL until first set.
    Column("window", Integer),
    Column("landed_count", Integer, nullable=False, default=0, server_default="0"),
    Column("external_commits", Integer, nullable=False, default=0, server_default="0"),
    Column("next_candidate", Integer, nullable=False, default=1, server_default="1"),
    Column("next_group", Integer, nullable=False, default=1, server_default="1"),
    Column("next_position", Integer, nullable=False, default=1, server_default="1"),
)

items = Table(
    "items",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("queue_id", Integer, ForeignKey("queues.id"), nullable=False),
    Column("component", _str(64), nullable=False),
    Column("version", _str(200), nullable=False),
    Column("sha", _str(40), nullable=False),
    Column("digest", _str(100)),
    Column("configurations", Text, nullable=False),  # JSON list: the targets at submit
    Column("priority", Integer, nullable=False, default=0),
    Column("state", _str(16), nullable=False),
    Column("submitted_at", Float, nullable=False),
    Column("submitted_base", _str(40)),  # the integration head at submit (stale-bump rule)
    Column("updated_at", Float, nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("recoveries", Integer, nullable=False, default=0),
    Column("holder", _str(128)),
    Column("lease_token", Integer),
    Column("lease_expires_at", Float),
    Column("candidate", Text),  # JSON: base, tree, configurations, manifest text, old versions
    Column("outcome", Text),  # JSON: landed / rejection / skipped / cancelled details
    # Version 3, the pipeline scheduler: place in the pipeline (kept on requeue), batch, and
    # the id of the item's current candidate (a `candidates` row).
    Column("position", Integer),
    Column("group", Integer),
    Column("candidate_id", _str(32)),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_seq", Integer, ForeignKey("items.seq"), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("configuration", _str(64), nullable=False),
    Column("stage", _str(64), nullable=False),
    Column("try_no", Integer, nullable=False),
    Column("state", _str(16), nullable=False),
    Column("exit_code", Integer),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("worker", _str(128), nullable=False),
    Column("host", _str(255)),
    Column("pid", Integer),  # the stage's process (group leader) while it runs
    Column("pid_started", Float),
    Column("log", Text, nullable=False),
)

landings = Table(
    "landings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_seq", Integer, ForeignKey("items.seq"), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("state", _str(16), nullable=False),  # open, landed, undone
    Column("base", _str(40), nullable=False),
    Column("tree", _str(40), nullable=False),
    Column("commit_sha", _str(40)),
    Column("commit_message", Text, nullable=False),
    Column("tag_name", _str(200), nullable=False),
    Column("tag_message", Text, nullable=False),
    Column("tag_sha", _str(40)),
    Column("who_name", _str(200), nullable=False),
    Column("who_email", _str(200), nullable=False),
    Column("timestamp", _EPOCH_SECONDS, nullable=False),
    Column("created_at", Float, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", _str(64), nullable=False, unique=True),
    Column("event", _str(32), nullable=False),
    Column("item_seq", Integer, ForeignKey("items.seq")),
    # The notifier's name; NULL only on rows a version-1 store queued by list position.
    Column("notifier", _str(64)),
    Column("payload", Text, nullable=False),
    Column("state", _str(16), nullable=False),  # pending, delivered, failed, dropped
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("claimed_by", _str(64)),  # the sender holding a pending row until next_attempt_at
    Column("last_error", Text),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("item_seq", Integer),
    Column("kind", _str(32), nullable=False),
    Column("detail", Text, nullable=False),
)

# Version 2: live items and the newest finished ones are read through partial indexes, so
# neither read grows with history (version 1 had one index on items.state, which the planner
# preferred even where it meant reading and sorting every finished item).
Index("ix_items_live", items.c.seq,
      sqlite_where=items.c.state.in_(LIVE_STATES),
      postgresql_where=items.c.state.in_(LIVE_STATES))
Index("ix_items_finished", items.c.seq,
      sqlite_where=items.c.state.in_(FINISHED_STATES),
      postgresql_where=items.c.state.in_(FINISHED_STATES))
Index("ix_landings_item_seq", landings.c.item_seq)
Index("ix_outbox_state_id", outbox.c.state, outbox.c.id)
Index("ix_outbox_item_seq", outbox.c.item_seq)
Index("ix_events_kind", events.c.kind, events.c.id)  # the newest event of a kind
Index("ix_events_item_seq", events.c.item_seq, events.c.id)  # one item's history

# Version 3: the pipeline's front, in queue order, through partial indexes of live items: those
# in the pipeline by position, then the waiting ones by priority descending, seq ascending.
Index("ix_items_positioned", items.c.position,
      sqlite_where=items.c.state.in_(LIVE_STATES) & items.c.position.isnot(None),
      postgresql_where=items.c.state.in_(LIVE_STATES) & items.c.position.isnot(None))
Index("ix_items_waiting", items.c.priority.desc(), items.c.seq,
      sqlite_where=items.c.state.in_(LIVE_STATES) & items.c.position.is_(None),
      postgresql_where=items.c.state.in_(LIVE_STATES) & items.c.position.is_(None))

# Version 3: a tested tree (spec §3): the ordered items whose bumps it applies (assumed ones
# first), the ones it decides on, and where it stands; a landed, discarded, rejected or split
# candidate keeps its row (the lander reads tree, base and manifest of a landing one).
candidates = Table(
    "candidates",
    metadata,
    Column("id", _str(32), primary_key=True),
    Column("queue_id", Integer, ForeignKey("queues.id"), nullable=False),
    Column("items", Text, nullable=False),  # JSON list of item ids, assumed first
    Column("own", Text, nullable=False),  # JSON list of item ids
    Column("configurations", Text, nullable=False),  # JSON list
    # testing, passed, failing (live); landing, landed, discarded, rejected, split (not)
    Column("state", _str(16), nullable=False),
    Column("base_landed", Integer, nullable=False),
    Column("base_external", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("why", _str(32)),  # a discarded candidate: rebuilt, outside-window, …
    Column("landing_order", Integer),  # a landing one: landed_count once it lands (lander order)
    Column("failure", Text),  # JSON: pipeline.Failure
    Column("tree", _str(40)),  # the worker fills these three once it built the tree
    Column("base", _str(40)),
    Column("manifest", Text),
)
Index("ix_candidates_state", candidates.c.state)

# Version 3: one run of one stage for one configuration of a candidate, one try; `seq` is the
# start order. The serial worker's `runs` (one per item attempt) stay as they are.
pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", _str(160), nullable=False, unique=True),  # candidate/configuration/stage/try
    Column("candidate_id", _str(32), ForeignKey("candidates.id"), nullable=False),
    Column("configuration", _str(64), nullable=False),
    Column("stage", Integer, nullable=False),  # index into the pipeline's stages
    Column("attempt", Integer, nullable=False),
    Column("state", _str(16), nullable=False),  # pipeline.RunState
    Column("runner", _str(128)),
    Column("exit_code", Integer),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("wasted", Integer, nullable=False, default=0),  # killed or discarded: runner time lost
    Column("holder", _str(128)),  # the worker whose runner executes it
    Column("lease_token", Integer),
    Column("lease_expires_at", Float),
    Column("log", Text),
    Column("host", _str(255)),  # version 4: the stage's process, killed if its worker dies
    Column("pid", Integer),
    Column("pid_started", Float),
)
Index("ix_pipeline_runs_candidate", pipeline_runs.c.candidate_id, pipeline_runs.c.seq)

# Version 3: a runner slot of a worker and the run it executes (NULL: free); `seq` orders them.
runners = Table(
    "runners",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", _str(128), nullable=False, unique=True),
    Column("worker", _str(128)),
    Column("pool", _str(64)),
    Column("run", _str(160)),
)

workers = Table(
    "workers",
    metadata,
    Column("id", _str(128), primary_key=True),
    Column("host", _str(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("pid_started", Float, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)

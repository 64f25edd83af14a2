"""The data model, as SQLAlchemy Core tables: the one description of the schema.

Alembic migrations (migrations/versions/) create exactly these; tests/app/store checks that
`alembic upgrade head` and this metadata agree. Core, not ORM: the ingest hot path writes
with executemany / COPY (docs/benchmarks.md), and the read paths select columns.

Shape, by who asks:
- hosts and their detection state over time: `host` (current facts, one row per host),
  `host_state` (a row whenever mode, mitigate, support or per-CPU detection changed).
- guests: `guest` (one row per guest name, the API's handle; its identity is the name plus
  the uuid of its first sighting, and only sightings of that identity move its last host,
  last action and kill: app/ingest/write.py), `guest_host` (what each host saw of each guest
  name, written only by that host's batches: issue #14, one host cannot speak for another).
- the history: `event` (one row per observation, idempotent on host, boot_id, source, seq),
  `gap` (counted losses, idempotent on host, boot_id, source, first_seq, reason).
- charts: `rollup_1m` and `rollup_1h`, sums per bucket and (host, guest, kind, action, source),
  maintained in the ingest transaction so a 30-day chart reads ~720 rows per series;
  `rollup_fleet_1h`, rollup_1h without host and guest, kept by triggers (the fleet chart).
- access: `token` (sha256 of the token, never the token; enrollment tokens too, role `enroll`).
- alerting: `alert_rule`, `alert` (one row per firing episode of one label set), `silence`,
  `webhook`, `webhook_delivery` (the durable outbox and the delivery log in one table),
  `alert_lease` (which process evaluates and sends, and when the database was last heard from),
  `backend_break` (the backend's own outages, no host's silence).

Times are timezone-aware UTC (`DateTime(timezone=True)`); SQLite stores them as text, so
app.store.engine installs a type adapter that hands back aware datetimes on both engines.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect

# One naming convention, so SQLite batch migrations and PostgreSQL name constraints alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# BIGINT on PostgreSQL, INTEGER (the rowid alias, so autoincrement works) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every engine.

    SQLite has no time zone type: it stores ISO text and returns naive datetimes, so
    values are normalised to UTC on the way in and marked UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


host = Table(
    "host",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("boot_id", String(64), nullable=False),
    Column("kernel", String(128), nullable=False),
    Column("cpu_model", String(255), nullable=False),
    Column("agent_version", String(64), nullable=False),
    Column("first_seen_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    # False for a host only `splitwatch import` has written: no agent has ever reported it, so
    # its last_seen_at (when the import arrived) says nothing of an agent being alive (#16).
    Column("agent_reported", Boolean, nullable=False, server_default="1"),
    # Latest state (null until the agent sent one).
    Column("state_observed_at", UtcDateTime),
    Column("mode", String(16)),
    Column("ratelimit", Integer),
    Column("mitigate", SmallInteger),
    Column("sld_supported", Boolean),
    Column("bld_supported", Boolean),
    Column("cpus_total", Integer, nullable=False, server_default="0"),
    Column("cpus_on", Integer, nullable=False, server_default="0"),
    Column("cpus_off", Integer, nullable=False, server_default="0"),
    Column("cpus_error", Integer, nullable=False, server_default="0"),
    # The agent's consistency verdict on its newest sample (agent/kernel/consistency.py, #16):
    # null when its agent sends none (an older agent: status "unknown").
    Column("verdict", String(32)),
    Column("verdict_reason", Text),
    Column("verdict_details", JSON),
    Column("verdict_since", UtcDateTime),  # the sample that first gave this verdict
    Column("cpus", JSON, nullable=False, default=list),  # latest per-CPU list as sent
    Column("health", JSON),  # agent's own figures from the newest batch (#4)
)

host_state = Table(
    "host_state",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("host_id", Integer, ForeignKey("host.id", ondelete="CASCADE"), nullable=False),
    Column("observed_at", UtcDateTime, nullable=False),
    Column("boot_id", String(64), nullable=False),
    Column("kernel", String(128), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("ratelimit", Integer),
    Column("mitigate", SmallInteger),
    Column("sld_supported", Boolean, nullable=False),
    Column("bld_supported", Boolean, nullable=False),
    Column("cpus_on", Integer, nullable=False),
    Column("cpus_off", Integer, nullable=False),
    Column("cpus_error", Integer, nullable=False),
    Column("verdict", String(32)),  # the consistency verdict of that sample (null: none sent)
    Column("cpus", JSON, nullable=False),  # [{"cpu", "test_ctrl", "sld_on", "bld_on", "error"}]
    Index("ix_host_state_host_id_observed_at", "host_id", "observed_at"),
)

guest = Table(
    "guest",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("uuid", String(64)),
    Column("vmm", String(32), nullable=False),
    Column("first_seen_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("last_host_id", Integer, ForeignKey("host.id", ondelete="SET NULL")),
    Column("last_action", String(16)),
    Column("killed_at", UtcDateTime),  # last sigbus that killed it (host in fatal mode)
    # How that kill was known: kernel_line | tracefs | vmm_exit (events[].evidence, #16).
    Column("killed_by", String(16)),
)

# One row per (host, guest name) that host ever reported: its own view, written only by its
# own batches (#14). Also what SPLITWATCH_MAX_GUESTS_PER_HOST counts (primary key host first).
guest_host = Table(
    "guest_host",
    metadata,
    Column("host_id", Integer, ForeignKey("host.id", ondelete="CASCADE"), primary_key=True),
    Column("guest_id", Integer, ForeignKey("guest.id", ondelete="CASCADE"), primary_key=True),
    Column("uuid", String(64)),
    Column("vmm", String(32), nullable=False),
    Column("first_seen_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("last_action", String(16)),
    Column("killed_at", UtcDateTime),
    Index("ix_guest_host_guest_id", "guest_id"),
)

event = Table(
    "event",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("host_id", Integer, ForeignKey("host.id", ondelete="CASCADE"), nullable=False),
    Column("boot_id", String(64), nullable=False),
    Column("source", String(16), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("time", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("comm", String(64), nullable=False),
    Column("tid", Integer, nullable=False),
    Column("tgid", Integer),
    Column("address", String(20)),
    Column("count", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    Column("guest_id", Integer, ForeignKey("guest.id", ondelete="SET NULL")),
    Column("vcpu", Integer),
    Column("vmm", String(32)),
    # Idempotency key (docs/agent.md): a resent batch inserts nothing. On PostgreSQL the table
    # is partitioned by day on `time` (#13, migrations/versions/2026_11_30_scale.py), and this
    # key and the primary key there also hold `time` (app/retention/partitions.py).
    UniqueConstraint("host_id", "boot_id", "source", "seq"),
    Index("ix_event_time_id", "time", "id"),
    Index("ix_event_host_id_time", "host_id", "time"),
    Index("ix_event_guest_id_time", "guest_id", "time"),
)

gap = Table(
    "gap",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("host_id", Integer, ForeignKey("host.id", ondelete="CASCADE"), nullable=False),
    Column("boot_id", String(64), nullable=False),
    Column("source", String(16), nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    Column("reason", String(16), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    UniqueConstraint("host_id", "boot_id", "source", "first_seq", "reason"),
    Index("ix_gap_host_id_received_at", "host_id", "received_at"),
)


# Covering indexes: every column a chart or a scrape reads is in the index, so SQLite and
# PostgreSQL answer from the index alone (no row lookup per rollup row: ~4x faster on the
# 30-day chart of a dense fleet, 85k hourly rows, bench/bench_series.py --fleet dense).
# Series (app/store/series.py): bucket range first, then action, so a group_by=action chart is
# aggregated in index order with no sort; the other columns serve the filters.
SERIES_INDEX = ("bucket", "action", "kind", "source", "host_id", "guest_id", "count")
# /metrics (app/metrics.py) sums all of rollup_1h per label set: in this order SQLite streams
# the groups out of the index with no temp B-tree. Not on rollup_1m, which nothing scans whole.
METRICS_INDEX = ("host_id", "guest_id", "kind", "action", "source", "count")
# Reads about some guests or hosts over a range (the top 10's series by guest or host, a list
# page's totals) and the ranking of every guest or host by its range total
# (app/store/series.py key_totals): each key's rows of the range are one range of these, so a
# few keys cost a few seeks and a ranking sums key by key with no sort. Not on rollup_1m, whose
# ranges are the minutes at a range's edges. migrations/versions/2026_11_30_rollup_key_indexes.py
GUEST_INDEX = ("guest_id", "bucket", "host_id", "count")
HOST_INDEX = ("host_id", "bucket", "guest_id", "count")


def _rollup(name: str, *, hourly: bool) -> Table:
    extra = (METRICS_INDEX, GUEST_INDEX, HOST_INDEX) if hourly else ()
    indexes = [Index(f"ix_{name}_{'_'.join(columns)}", *columns) for columns in (SERIES_INDEX, *extra)]
    # guest_id 0 = no guest: a NULL would make the upsert key never match.
    return Table(
        name,
        metadata,
        Column("bucket", UtcDateTime, nullable=False),
        Column("host_id", Integer, nullable=False),
        Column("guest_id", Integer, nullable=False),
        Column("kind", String(16), nullable=False),
        Column("action", String(16), nullable=False),
        Column("source", String(16), nullable=False),
        Column("count", BigInteger, nullable=False),  # sum of event.count
        Column("events", BigInteger, nullable=False),  # rows (sightings)
        UniqueConstraint("bucket", "host_id", "guest_id", "kind", "action", "source"),
        *indexes,
    )


rollup_1m = _rollup("rollup_1m", hourly=False)
rollup_1h = _rollup("rollup_1h", hourly=True)
ROLLUPS: tuple[tuple[int, Table], ...] = ((3600, rollup_1h), (60, rollup_1m))  # coarsest first

# rollup_1h summed over hosts and guests, per (bucket, action, kind, source): what the fleet
# chart reads (app/store/series.py), a few dozen rows per hour however large the fleet. Kept
# by triggers on rollup_1h in the writer's transaction, and `shard` spreads concurrent
# PostgreSQL writers over rows of their own: migrations/versions/2026_11_30_fleet_rollup.py.
# Its key starts (bucket, action): a group_by=action chart in key order, no sort.
rollup_fleet_1h = Table(
    "rollup_fleet_1h",
    metadata,
    Column("bucket", UtcDateTime, nullable=False),
    Column("action", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("source", String(16), nullable=False),
    Column("shard", Integer, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("events", BigInteger, nullable=False),
    PrimaryKeyConstraint("bucket", "action", "kind", "source", "shard"),
    # SQLite: the rows live in the primary key's B-tree, so a chart reads them in key order
    # from one structure (no row lookup per entry).
    sqlite_with_rowid=False,
)

token = Table(
    "token",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("hash", String(64), nullable=False, unique=True),  # sha256 hex of the token
    Column("role", String(16), nullable=False),  # agent | viewer | admin
    Column("host_name", String(255)),  # agent tokens: the one host they may write
    Column("label", String(255)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
    # Any role: past this instant the token no longer authenticates (#15).
    Column("expires_at", UtcDateTime),
    # Enrollment tokens (role "enroll", #15): which host names may enroll with it, how often.
    Column("host_glob", String(255)),
    Column("max_uses", Integer),
    Column("uses", Integer, nullable=False, server_default="0"),
    # Agent tokens issued by enrollment: the host's /etc/machine-id (a reinstall of the same
    # machine may enroll again) and the enrollment token it came through.
    Column("machine_id", String(64)),
    Column("enrolled_by", Integer),
    # Enrollment, rekey and the admin page look agent tokens up by host name.
    Index("ix_token_host_name", "host_name"),
)

alert_rule = Table(
    "alert_rule",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("type", String(32), nullable=False),  # threshold | drift | silent | killed ...
    Column("kind", String(16)),  # split_lock | bus_lock | null (both)
    Column("group_by", String(16)),  # host | guest | null (fleet)
    Column("window_s", Integer, nullable=False),
    Column("threshold", Integer),
    Column("for_s", Integer, nullable=False, server_default="0"),
    Column("severity", String(16), nullable=False, server_default="warning"),
    Column("match", JSON, nullable=False, default=dict),  # label filters on what it counts
    Column("labels", JSON, nullable=False, default=dict),  # extra labels on its alerts
    Column("annotations", JSON, nullable=False, default=dict),
    Column("builtin", Boolean, nullable=False, server_default="0"),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

alert = Table(
    "alert",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("rule_id", Integer, ForeignKey("alert_rule.id", ondelete="CASCADE"), nullable=False),
    Column("fingerprint", String(32), nullable=False),  # hash of the sorted labels
    Column("labels", JSON, nullable=False),
    Column("annotations", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # pending | firing | resolved
    Column("value", BigInteger),
    Column("pending_since", UtcDateTime, nullable=False),
    Column("starts_at", UtcDateTime),  # when it began firing
    Column("ends_at", UtcDateTime),
    Column("last_evaluated_at", UtcDateTime, nullable=False),
    # When its firing notices were written to the outbox; null while silenced (or pending):
    # a silence that expires on a still-firing alert lets the notice go then (#12).
    Column("notified_at", UtcDateTime),
    Index("ix_alert_fingerprint_status", "fingerprint", "status"),
    Index("ix_alert_status_rule_id", "status", "rule_id"),
)

silence = Table(
    "silence",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("matchers", JSON, nullable=False),  # {label: value}
    Column("starts_at", UtcDateTime, nullable=False),
    Column("ends_at", UtcDateTime, nullable=False),
    Column("created_by", String(255)),
    Column("comment", Text, nullable=False, server_default=""),
    Column("created_at", UtcDateTime, nullable=False),
)

webhook = Table(
    "webhook",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("url", Text, nullable=False),
    Column("format", String(16), nullable=False),  # alertmanager | native | alertmanager_api
    Column("secret", String(255), nullable=False),  # whsec_<base64>: needed to sign ("" for alertmanager_api)
    Column("match", JSON, nullable=False, default=dict),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("gone_at", UtcDateTime),  # a receiver answered 410 Gone
    Column("disabled_reason", Text),  # why the sender turned it off (410), for the API and dashboard
    Column("created_at", UtcDateTime, nullable=False),
)

webhook_delivery = Table(
    "webhook_delivery",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("webhook_id", Integer, ForeignKey("webhook.id", ondelete="CASCADE"), nullable=False),
    Column("alert_id", BigInteger),
    Column("msg_id", String(64), nullable=False, unique=True),  # webhook-id header, stable over retries
    Column("notice", String(16), nullable=False),  # firing | resolved
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed | gone
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("delivered_at", UtcDateTime),
    # The latest attempt, for the delivery log (#12).
    Column("last_attempt_at", UtcDateTime),
    Column("latency_ms", Integer),
    Column("response_snippet", Text),  # the first bytes of the receiver's answer
    Index("ix_webhook_delivery_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_webhook_delivery_webhook_id_id", "webhook_id", "id"),
)

# Which process evaluates rules and sends webhooks: one row per job, held by the process
# that renewed it last. The evaluator renews it in the same transaction as the alert state
# changes (UPDATE ... WHERE holder = me OR expired), so two workers can never both commit
# an evaluation: the row lock serialises them and the loser's WHERE no longer matches (#12).
alert_lease = Table(
    "alert_lease",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("renewed_at", UtcDateTime, nullable=False),
    # Only on "alerting" (app/store/backend_break.py): when a serve process last reached the
    # database from its evaluator loop, whatever its evaluation did.
    Column("heard_at", UtcDateTime, nullable=True),
)

# The backend's breaks: gaps longer than the lease's time in alert_lease.heard_at, when no
# process reached the database and no batch was stored. No host's silence counts them
# (app/store/status.py); the last BREAKS_KEPT are kept (app/store/backend_break.py).
backend_break = Table(
    "backend_break",
    metadata,
    Column("down_at", UtcDateTime, primary_key=True),
    Column("back_at", UtcDateTime, nullable=False),
    Index("ix_backend_break_back_at", "back_at"),
)

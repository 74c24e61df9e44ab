"""The SQL store's tables (SQLAlchemy Core), the column lists its reads select, and the grouped
reads of batch_statuses. Used by resources/sql_store.py on SQLite and PostgreSQL alike.

Three tables are append-only event logs (task_events, label_events, production_events: see
`event_table`); tasks and labels keep the current state of each task and labelled form in step
with their events, so reads never scan the history.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from resources.store_records import ACTIVE_STATES, UNSUCCESSFUL_STATES, ModelRecord

# -- schema (the same tables and column names as the SQLite files written before SQLAlchemy) ------

metadata = sa.MetaData()
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY

anomaly_counts = sa.Table(
    "anomaly_counts", metadata,
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("window_start_ms", sa.BigInteger, nullable=False, autoincrement=False),
    sa.Column("window_end_ms", sa.BigInteger, nullable=False),
    sa.Column("lines", sa.BigInteger, nullable=False),
    sa.Column("anomalies", sa.BigInteger, nullable=False),
    sa.Column("model_version", sa.BigInteger, nullable=False),
    sa.Column("recorded_ms", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("batch", "window_start_ms"),
)
sample_counts = sa.Table(
    "sample_counts", metadata,
    sa.Column("partition_key", sa.Text, nullable=False),
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("window_start_ms", sa.BigInteger, nullable=False),
    sa.Column("window_end_ms", sa.BigInteger, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("recorded_ms", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("partition_key", "batch"),
    sa.Index("sample_counts_batch", "batch", "window_start_ms"),
)
# covers batch_statuses' sums (an index-only scan), and a batch's new samples are a range of it
sample_counts_status = sa.Index("sample_counts_status", sample_counts.c.batch, sample_counts.c.window_start_ms,
                                sample_counts.c["count"])
models = sa.Table(
    "models", metadata,
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False, autoincrement=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("artifact", sa.Text, nullable=False),
    sa.Column("artifact_uri", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("window_start_ms", sa.BigInteger),
    sa.Column("window_end_ms", sa.BigInteger),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("parent_version", sa.BigInteger),
    sa.Column("mode", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("batch", "version"),
    sa.UniqueConstraint("batch", "run_id"),
)


def event_table(name: str, index: tuple[str, ...], *columns: sa.Column) -> sa.Table:
    """An append-only table of events: `seq` numbers them in commit order (AUTOINCREMENT on SQLite,
    so a number is never reused), and the index on (`index`..., seq) reads one thing's events in order."""
    return sa.Table(
        name, metadata,
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        *columns,
        sa.Index(f"{name}_{index[0]}", *index[1:], "seq"),
        sqlite_autoincrement=True,
    )


task_events = event_table(
    "task_events", ("task", "task_id"),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("window_start_ms", sa.BigInteger),
    sa.Column("window_end_ms", sa.BigInteger),
    sa.Column("deadline_ms", sa.BigInteger),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
)
# the current state of each task (its last event), kept in step with task_events
tasks = sa.Table(
    "tasks", metadata,
    sa.Column("task_id", sa.Text, primary_key=True),
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("window_start_ms", sa.BigInteger),
    sa.Column("window_end_ms", sa.BigInteger),
    sa.Column("started_ms", sa.BigInteger, nullable=False),
    sa.Column("deadline_ms", sa.BigInteger),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Index("tasks_batch", "batch", "first_seq"),
    sa.Index("tasks_state", "state", "first_seq"),
)
# labels: every label given, appended (the history), and the current label of each
# (batch, form), kept in step; form_key = label_key(batch, masked): forms can be 4000
# characters, too long for a PostgreSQL btree entry, so they are keyed by their hash.
def _label_columns() -> list[sa.Column]:
    """A label's columns, the same in its event and in the current label (a Column belongs to one table)."""
    return [
        sa.Column("batch", sa.Text, nullable=False),
        sa.Column("form_key", sa.Text, nullable=False),
        sa.Column("masked", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("model_version", sa.BigInteger),
        sa.Column("example", sa.Text, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    ]


label_events = event_table("label_events", ("form", "batch", "form_key"), *_label_columns())
labels = sa.Table(
    "labels", metadata,
    *_label_columns(),
    sa.Column("seq", sa.BigInteger, nullable=False),  # the label_events row of the current label
    sa.PrimaryKeyConstraint("batch", "form_key"),
    sa.Index("labels_seq", "seq"),
)

# production changes of each batch, appended (the last one wins; see resources/store_records.py)
production_events = event_table(
    "production_events", ("batch", "batch"),
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("previous_version", sa.BigInteger),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
)

TASK_COLS = [tasks.c[name] for name in (
    "task_id", "batch", "state", "run_id", "mode", "window_start_ms", "window_end_ms", "started_ms",
    "deadline_ms", "updated_ms", "message",
)]
MODEL_COLS = [models.c[name] for name in (
    "batch", "version", "run_id", "artifact", "artifact_uri", "metrics", "window_start_ms", "window_end_ms",
    "created_ms", "parent_version", "mode",
)]
PRODUCTION_COLS = [production_events.c[name] for name in (
    "batch", "version", "previous_version", "action", "source", "reason", "created_ms",
)]
LABEL_COLS = [labels.c[name] for name in (
    "batch", "masked", "label", "created_ms", "source", "model_version", "example",
)]


def create_schema(conn: sa.Connection) -> None:
    """Create the missing tables, and the indexes added since a store's tables were created
    (create_all leaves an existing table's indexes as they are)."""
    metadata.create_all(conn)
    sample_counts_status.create(conn, checkfirst=True)
    add_missing_columns(conn)  # a store from before a column was added


def model_from_row(r) -> ModelRecord:
    """A ModelRecord from a row of MODEL_COLS."""
    return ModelRecord(
        batch=r[0], version=r[1], run_id=r[2], artifact=r[3], artifact_uri=r[4], metrics=json.loads(r[5]),
        window_start_ms=r[6], window_end_ms=r[7], created_ms=r[8], parent_version=r[9], mode=r[10],
    )


def _status_queries():
    """batch_statuses' grouped reads (built once: SQLAlchemy then reuses their compiled form). Each
    is one statement whatever the number of batches; the sums read the sample_counts_status index."""
    m, s, n = models.alias("m"), sample_counts.alias("s"), sample_counts.alias("n")
    latest = sa.select(models.c.batch, sa.func.max(models.c.version).label("v")).group_by(models.c.batch).subquery("l")
    watermark = (sa.select(m.c.batch, m.c.window_end_ms.label("wm"))
                 .join(latest, sa.and_(m.c.batch == latest.c.batch, m.c.version == latest.c.v)).subquery("w"))
    totals = sa.select(s.c.batch, sa.func.sum(s.c["count"]).label("total")).group_by(s.c.batch).subquery("t")
    # new = partitions starting at or after the latest model's window end: one index range per batch
    new_since = (sa.select(sa.func.coalesce(sa.func.sum(n.c["count"]), 0))
                 .where(n.c.batch == totals.c.batch, n.c.window_start_ms >= watermark.c.wm).scalar_subquery())
    counts_query = (
        sa.select(totals.c.batch, sa.case((watermark.c.wm.is_(None), totals.c.total), else_=new_since), totals.c.total)
        .select_from(totals.outerjoin(watermark, watermark.c.batch == totals.c.batch))
    )
    models_query = sa.select(models.c.batch, models.c.version, models.c.window_end_ms, models.c.mode)
    active_query = (sa.select(*TASK_COLS).where(tasks.c.state.in_(ACTIVE_STATES)).order_by(tasks.c.first_seq.desc()))
    attempts_query = (sa.select(tasks.c.batch, sa.func.count()).where(tasks.c.state.in_(UNSUCCESSFUL_STATES))
                      .group_by(tasks.c.batch))
    last = sa.select(sa.func.max(production_events.c.seq).label("seq")).group_by(production_events.c.batch).subquery("p")
    production_query = (sa.select(production_events.c.batch, production_events.c.version, production_events.c.action)
                        .join(last, production_events.c.seq == last.c.seq))
    return models_query, counts_query, active_query, attempts_query, production_query


STATUS_QUERIES = _status_queries()

# pushed samples (resources/sql_samples.py): a batch's samples with unique nanosecond timestamps,
# the clock row each batch's writers stamp after, and the inference results recorded per line/form
samples = sa.Table(
    "samples", metadata,
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("ts_ns", sa.BigInteger, nullable=False, autoincrement=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("validation", sa.SmallInteger, nullable=False),
    sa.UniqueConstraint("ts_ns", "batch", name="samples_ts_batch"),
)
sample_clock = sa.Table(
    "sample_clock", metadata,
    sa.Column("batch", sa.Text, primary_key=True),
    sa.Column("last_ns", sa.BigInteger, nullable=False),
)
# chunks of keyed pushes (`logloop push --key`): a chunk whose key is here was registered whole, in the
# transaction that added its row, so a retry of the push skips it
push_chunks = sa.Table(
    "push_chunks", metadata,
    sa.Column("batch", sa.Text, primary_key=True),
    sa.Column("chunk_key", sa.String(64), primary_key=True),
    sa.Column("first_ns", sa.BigInteger, nullable=False),
    sa.Column("last_ns", sa.BigInteger, nullable=False),
)
inference_results = sa.Table(
    "inference_results", metadata,
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("ts_ns", sa.BigInteger, nullable=False, autoincrement=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("anomaly", sa.SmallInteger, nullable=False),
    sa.Column("masked", sa.Text, nullable=False),
    sa.Column("lines", sa.BigInteger, nullable=False),
    sa.Column("model_version", sa.BigInteger, nullable=False),
    sa.Column("window_start_ms", sa.BigInteger),
    sa.Column("window_end_ms", sa.BigInteger),
    # why the verdict is what it is (ops.validate.verdict.REASONS), and the threshold it was judged against;
    # rows recorded before these existed read back as "" and NULL
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("threshold", sa.Float),
    sa.UniqueConstraint("batch", "ts_ns", name="inference_results_batch_ts"),
)

# Columns added to existing tables after their first release: create_all makes missing tables only,
# so a store created earlier gets these with ALTER TABLE ... ADD COLUMN (add_missing_columns). Each
# needs a server default or must be nullable, so the rows already there stay valid.
ADDED_COLUMNS = (inference_results.c.reason, inference_results.c.threshold)


def add_missing_columns(conn: sa.Connection) -> list[str]:
    """Add ADDED_COLUMNS that a store's tables lack (a store created before them); the names added.
    Run inside the schema transaction, after create_all."""
    inspector = sa.inspect(conn)
    present: dict[str, set] = {}
    added = []
    for column in ADDED_COLUMNS:
        table = column.table.name
        if table not in present:
            present[table] = {c["name"] for c in inspector.get_columns(table)}
        if column.name in present[table]:
            continue
        spec = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {conn.dialect.identifier_preparer.quote(table)} ADD COLUMN {spec}")
        added.append(f"{table}.{column.name}")
    return added

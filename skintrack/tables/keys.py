"""Integer keys for the joins inside the lake: each analysis's `analysis_key`, a function of its id.

A metric's records join its values to the session index on the analysis (`skintrack.analysis.selection`);
at a million analyses, hashing and comparing the 32-character `analysis_id` was most of that join's time. So
every table a metric is read from (`KEYED`) and the session index carry `analysis_key`: the first 63 bits
of the SHA-256 of `analysis_id`, a function of the id alone. Whoever writes a row can compute it (a Spark
executor, an ingest, the backfill of an older study in SQL: `KEY_SQL`), and no counter is shared between
writers. A new study's lake refuses a row without it (NOT NULL). An older study gains the column and its keys
when a writer first upgrades it (`store.evolve`); DuckLake cannot then make the column required, so a reader
checks it for nulls (a skintrack that predates the keys may still write there) before it joins on it
(`usable`).

Two ids may share a key (odds of about 1 in 20 million for a study of a million analyses). Each write checks
the keys it added against the lake's (`check`) and records any pair it finds in `key_collisions`; at a
version that lists one, the records join on `analysis_id` as before (`Study.keyed`), so a shared key never
joins two analyses.

Example
-------
>>> key_of("0123456789abcdef0123456789abcdef")
2258799999630702011
"""
from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.compute as pc

KEY = "analysis_key"
# the tables a metric is read from (`skintrack.analysis.selection.metric_source`), and the session index
KEYED = ("analyses", "scores", "counts", "areas", "severities", "tones", "wrinkles", "measures", "session_index")
ORIGINS = ("analyses", "measures")  # every analysis id enters the lake through one of these
KEY_SQL = "CAST(CAST(('0x' || sha256({id})[1:16]) AS UBIGINT) >> 1 AS BIGINT)"  # key_of, in DuckDB SQL
NEW_KEYS = "new_analysis_keys"  # a writer's temporary table of the keys its open transaction added


def keyed(schema: pa.Schema) -> pa.Schema:
    """A table's schema with the key column (`KEYED` tables: `schema.TABLES`, `store.BASE`)."""
    return schema.append(pa.field(KEY, pa.int64()))


def key_of(analysis_id: str) -> int:
    """The key of one analysis id: the first 63 bits of its SHA-256 (a non-negative BIGINT)."""
    return int(hashlib.sha256(analysis_id.encode()).hexdigest()[:16], 16) >> 1


def with_keys(rows: pa.Table) -> pa.Table:
    """`rows` with their `analysis_key` (each distinct id hashed once), unless every row carries it already."""
    if KEY in rows.column_names and not rows[KEY].null_count:
        return rows
    ids = rows["analysis_id"]
    distinct = pc.unique(ids)
    keys = pa.array([None if a is None else key_of(a) for a in distinct.to_pylist()], pa.int64())
    column = keys.take(pc.index_in(ids, distinct))
    if KEY in rows.column_names:
        return rows.set_column(rows.column_names.index(KEY), KEY, column)
    return rows.append_column(KEY, column)


def note(con, rows: pa.Table) -> None:
    """Remember the keys a writer adds to an origin table, for `check` at its commit."""
    con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {NEW_KEYS} ({KEY} BIGINT)")
    con.register("_noted", rows.select([KEY]))
    try:
        con.execute(f"INSERT INTO {NEW_KEYS} SELECT DISTINCT {KEY} FROM _noted")
    finally:
        con.unregister("_noted")


def check(con, lake: str, everything: bool = False) -> None:
    """Record in `key_collisions` every key that two analysis ids share among the keys noted in the open
    transaction (all keys when `everything`: an older study's backfill)."""
    noted = con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?",
                        [NEW_KEYS]).fetchall()[0][0]
    if not noted and not everything:
        return
    among = "" if everything else f"WHERE {KEY} IN (SELECT {KEY} FROM {NEW_KEYS})"
    shared = con.execute(f"""
        SELECT {KEY}, analysis_id FROM (
            SELECT {KEY}, analysis_id, count(*) OVER (PARTITION BY {KEY}) AS ids
            FROM (SELECT {KEY}, analysis_id FROM {lake}.main.analyses {among}
                  UNION SELECT {KEY}, analysis_id FROM {lake}.main.measures {among}))
        WHERE ids > 1
        EXCEPT SELECT {KEY}, analysis_id FROM {lake}.main.key_collisions""").to_arrow_table()
    if noted:
        con.execute(f"DROP TABLE {NEW_KEYS}")
    if shared.num_rows:
        con.register("_shared", shared)
        try:
            con.execute(f"INSERT INTO {lake}.main.key_collisions BY NAME SELECT * FROM _shared")
        finally:
            con.unregister("_shared")


def usable(con, columns: list) -> bool:
    """Whether the joins may use the keys at the version whose columns are `columns` (`store.column_rows`), on a
    connection with the study's views at that version: the session index has them, no two analyses share
    one, and no row lacks one."""
    nullable = {table: nulls for table, column, nulls in columns if column == KEY}
    if "session_index" not in nullable or con.execute("SELECT count(*) FROM key_collisions").fetchall()[0][0]:
        return False
    views = {"analyses": "analyses_raw"}
    return not any(con.execute(f"SELECT count(*) FROM {views.get(t, t)} WHERE {KEY} IS NULL").fetchall()[0][0]
                   for t in KEYED if nullable.get(t))  # a table upgraded, not created, with its keys

"""The study on disk: a DuckLake (Parquet data files and a SQL catalog), face-map images, and the views.

Layout of a study folder::

    DIR/lake.sqlite          the DuckLake catalog: tables, snapshots (versions), which files hold what
    DIR/lake/                the Parquet data files
    DIR/store.toml           only for a shared study: the PostgreSQL catalog (and data path) to use instead
    DIR/raw/                 verbatim API responses archived by `skintrack analyze`
    DIR/maps/<analysis_id>/  decoded face maps
    DIR/plan.toml            the study plan (every saved plan is also kept in the lake, by version)

Every write is one DuckLake transaction: all tables change together or not at all, and each commit is a
numbered version with its time, the command and what changed. A reader pins one version, so it always
sees a whole study, never blocks a writer, and can go back to any version kept.

DuckLake is used instead of Delta Lake or Iceberg because it commits several tables in one transaction
(an analysis is its rows in 15 tables), keeps its catalog in SQLite locally or PostgreSQL for a team, and
is read by the DuckDB that runs every query.

Example
-------
>>> import tempfile, duckdb
>>> con = connect(tempfile.mkdtemp())
>>> con.execute("select count(*) from scores").fetchall()
[(0,)]
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import getpass
import json
import os
import random
import re
import shutil
import socket
import threading
import time
import tomllib
from pathlib import Path

import duckdb
import pyarrow as pa

from ..errors import StoreError, UsageError, is_whole
from ..sinks import sql_identifier, sql_literal
from . import extensions, keys
from .catalog import metric_keys
from .layout import CATALOG, CONFIG, DATA  # noqa: F401 (store.CATALOG, ... are read by other modules)
from .schema import CAPTURE, CAPTURE_SQL, TABLES, WRINKLE_MEASURES

LAKE = "lake"  # the name the catalog is attached under
META = f"__ducklake_metadata_{LAKE}"  # DuckLake's own tables of the attached catalog
HELD = "held"  # the schema of in-memory copies of a small study's tables at one version (hold_in_memory)
HELD_BYTES = 2 << 20  # a table whose Parquet files are at most this big is copied into memory on first use
ONE_THREAD_BYTES = 16 << 20  # a lake at most this big is read on one thread
BLANK = "blank"  # empty tables of the current schemas, for tables a study (or a version of it) does not have
BUSY_TIMEOUT_MS = 10_000  # a SQLite catalog: wait this long for the other side's lock before "database is locked"
BUSY_ATTEMPTS = 10  # then try the whole statement again this many times (SQLite gives up at once on a deadlock)
BASE = {  # tables whose columns grow with the CSVs given (manifest columns, subject columns)
    "sessions": pa.schema([("analysis_id", pa.string()), ("subject_id", pa.string()), ("visit", pa.string()),
                           ("taken_at", pa.timestamp("us")), ("assigned_at", pa.timestamp("us", tz="UTC"))]),
    "subjects": pa.schema([("subject_id", pa.string()), ("assigned_at", pa.timestamp("us", tz="UTC"))]),
    "session_index": pa.schema([("analysis_id", pa.string()), ("subject_id", pa.string()), ("visit", pa.string()),
                                ("taken_at", pa.timestamp("us")), ("days", pa.float64()), ("dup", pa.bool_()),
                                ("seq", pa.int64()), ("kind", pa.string())] +
                               [TABLES[table].field(column) for column, table in CAPTURE.items()]),
    "plans": pa.schema([("text", pa.string()), ("saved_at", pa.timestamp("us", tz="UTC"))]),
    "instrument": pa.schema([("at", pa.timestamp("us", tz="UTC")), ("batch", pa.string()), ("event", pa.string()),
                             ("detail", pa.string())]),  # what the sentinel found, and drift a user accepted
    "measures": pa.schema([("reading_id", pa.string()), ("analysis_id", pa.string()), ("subject_id", pa.string()),
                           ("visit", pa.string()), ("taken_at", pa.timestamp("us")), ("measure", pa.string()),
                           ("value", pa.float64()), ("unit", pa.string()), ("device", pa.string()),
                           ("rater", pa.string()), ("replicate", pa.string()), ("side", pa.string()),
                           ("source", pa.string()), ("assigned_at", pa.timestamp("us", tz="UTC"))]),
    "key_collisions": pa.schema([(keys.KEY, pa.int64()), ("analysis_id", pa.string())]),  # tables.keys
    "measure_catalogs": pa.schema([("text", pa.string()), ("saved_at", pa.timestamp("us", tz="UTC"))]),
}
BASE.update({t: keys.keyed(BASE[t]) for t in keys.KEYED if t in BASE})
SCHEMAS = {**TABLES, **BASE}
KEYS = {"sessions": "analysis_id", "subjects": "subject_id", "measures": "reading_id"}  # tables whose rows are replaced per key


def is_study(study) -> bool:
    """Whether the folder holds a study (a local catalog with something in it, or a shared one)."""
    catalog = Path(study) / CATALOG
    return (catalog.exists() and catalog.stat().st_size > 0) or is_shared(study)


def is_shared(study) -> bool:
    """Whether the study's catalog is shared (in PostgreSQL, `share`) rather than a local SQLite file."""
    return (Path(study) / CONFIG).exists()


def check_catalog(study) -> None:
    """Refuse a study whose data files have lost their catalog (deleted, or emptied to 0 bytes): without it
    nobody can tell which rows belong to which version, and a new catalog would orphan every file."""
    study = Path(study)
    if is_study(study):
        return
    data = study / DATA
    files = sum(1 for _ in data.rglob("*.parquet")) if data.is_dir() else 0
    if files:
        what = "is empty (0 bytes)" if (study / CATALOG).exists() else "is missing"
        raise StoreError(f"{study}: the catalog {CATALOG} {what}, but {DATA}/ holds {files} data files; nothing was "
                         f"read or written. Restore {CATALOG} from a backup of this folder (or, to start an empty "
                         f"study here, move {DATA}/ away first).")


def is_busy(error: Exception) -> bool:
    """Whether a DuckDB error is the catalog being busy with another process's statement (try again)."""
    text = str(error).lower()
    return "database is locked" in text or "database table is locked" in text or "sqlite_busy" in text


def retry_busy(fn, *args, attempts: int = BUSY_ATTEMPTS):
    """`fn(*args)`, tried again with a growing, jittered wait while the catalog is busy (bounded)."""
    for attempt in range(attempts):
        try:
            return fn(*args)
        except duckdb.Error as e:
            if not is_busy(e) or attempt + 1 == attempts:
                raise
            time.sleep(min(2.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")


def damaged(study, error: duckdb.Error, writing: bool = False) -> StoreError:
    """A DuckDB failure on the study's store as one line naming the study and, where DuckDB says it, the file."""
    found = re.search(r"[\"']([^\"']+\.(?:parquet|sqlite))[\"']", str(error))
    where = f" (file {found.group(1)})" if found else ""
    then = ("nothing of this command was committed; run it again once the store is reachable and whole"
            if writing else "restore damaged files from a backup of this folder")
    return StoreError(f"{study}: the study store failed{where}: {first_line(error)}; `skintrack check {study}` "
                      f"lists every damaged file; {then}.")


def is_old_layout(study) -> bool:
    """Whether the folder holds a study written before the DuckLake store (batch folders of Parquet)."""
    return (Path(study) / "batches").is_dir()


def catalog_of(study: Path) -> tuple[str, str]:
    """(the DuckLake catalog to attach, its data path) for a study folder."""
    study = Path(study).resolve()
    config = study / CONFIG
    if config.exists():
        try:
            doc = tomllib.loads(config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise UsageError(f"{config}: not a readable TOML file ({e})") from None
        if not str(doc.get("catalog", "")).startswith("postgres:"):
            raise UsageError(f"{config}: `catalog` must be a PostgreSQL connection, as 'postgres:dbname=... host=...'")
        return doc["catalog"], str(doc.get("data_path", study / DATA))
    return f"sqlite:{study / CATALOG}", str(study / DATA)


def check_output(study, out) -> Path:
    """`out` (a folder or file to write a report, an export or a chart to), unless it lies inside a part of the
    study that skintrack manages: its data files (compaction deletes the files the lake does not know), its
    raw archive (an ingest of raw/ reads every JSON file in it), its face maps, or its catalog.

    >>> check_output("/tmp/trial", "/tmp/trial/lake/adsl")
    Traceback (most recent call last):
    ...
    skintrack.errors.UsageError: /tmp/trial/lake/adsl: inside the study's own files (/tmp/trial/lake), which skintrack manages: write it outside them
    """
    study, out = Path(study).resolve(), Path(out).resolve()
    for part in (Path(catalog_of(study)[1]).resolve(), study / "raw", study / "maps", study / CATALOG):
        if out == part or part in out.parents:
            raise UsageError(f"{out}: inside the study's own files ({part}), which skintrack manages: write it "
                             "outside them")
    return out


def share(study, catalog: str, data_path=None) -> None:
    """Make `study` a shared study whose catalog is in PostgreSQL (`catalog` as 'postgres:dbname=... host=...';
    the password comes from PGPASSWORD or ~/.pgpass, never from a file of the study). The first machine
    creates the catalog's tables; every other machine shares the same catalog and data path.

    >>> share("/tmp/x", "sqlite:nope")
    Traceback (most recent call last):
    ...
    skintrack.errors.UsageError: catalog 'sqlite:nope': a shared study needs 'postgres:dbname=... host=...'
    """
    if not catalog.startswith("postgres:"):
        raise UsageError(f"catalog {catalog!r}: a shared study needs 'postgres:dbname=... host=...'")
    if "password" in catalog.lower():
        raise UsageError("the catalog connection holds a password: give it in PGPASSWORD or ~/.pgpass instead")
    study = Path(study)
    study.mkdir(parents=True, exist_ok=True)
    lines = [f"catalog = {json.dumps(catalog)}"] + ([f"data_path = {json.dumps(str(data_path))}"] if data_path else [])
    write_atomic(study / CONFIG, ("\n".join(lines) + "\n").encode())
    try:
        connect(study, write=True).close()  # the catalog's tables, made once (or found, on the next machine)
    except BaseException:
        (study / CONFIG).unlink()
        raise


def connect(study, version: int | None = None, write: bool = False, views: bool = True) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the study's lake attached as `lake`. A reader gets the views over it (at
    `version`, or the newest; none with `views=False`, for a reader of the catalog alone); a folder with no
    study yet gives empty views. A writer (`write=True`) gets no views (it writes `lake.main.<table>`), and
    the lake is created if needed."""
    # a reader's threads: see lake_sizes; unsigned extensions until the lake is attached (tables.extensions); a
    # reader's text comes to Arrow as large_string, what pandas' str columns hold (no copy of every string:
    # benchmarks/study.py, change_from_baseline at 1M)
    reader = {"threads": 1, "arrow_large_buffer_size": True}
    con = duckdb.connect(config={"allow_unsigned_extensions": True, **({} if write else reader)})
    study = Path(study)
    check_catalog(study)
    if write or is_study(study):
        retry_busy(attach, con, study, write)
    else:
        con.execute(f"ATTACH ':memory:' AS {LAKE}")
        create_tables(con)
    extensions.lock(con)
    if write or not views:
        return con
    if version is None:
        version = retry_busy(latest_version, con)
    else:
        version = check_version(con, version)
    retry_busy(create_views, con, version)
    return con


def check_version(con: duckdb.DuckDBPyConnection, version) -> int:
    """`version` (an int: a numpy integer read from `history()` is one; a boolean is not) if the study keeps it,
    else a `UsageError` naming the versions it has."""
    kept = [r[0] for r in con.execute(f"SELECT snapshot_id FROM {LAKE}.snapshots() ORDER BY 1").fetchall()]
    if not is_whole(version) or int(version) not in kept:
        have = f"{kept[0]}-{kept[-1]}" if kept else "none"
        raise UsageError(f"version {version!r}: this study keeps versions {have} (skintrack history lists them)")
    return int(version)


def attach(con: duckdb.DuckDBPyConnection, study: Path, create: bool = False) -> None:
    """Attach the study's DuckLake catalog as `lake` (creating it and its tables when `create`).

    Rows always go to Parquet files, never inlined into the catalog: DuckLake 1.5.5 drops inlined rows
    on flushing them, and a reader holding an older version then fails (found by the expiry test).

    A local catalog is a SQLite file in WAL mode, so that readers never block the writer nor the writer
    the readers (with the rollback journal, four busy readers starved an ingest for minutes); a reader of
    a folder it may not write (a read-only share) reads a private copy of the catalog, as WAL needs to
    write its index beside the file."""
    catalog, data = catalog_of(study)
    sqlite = not catalog.startswith("postgres:")
    extensions.load(con, "sqlite_scanner" if sqlite else "postgres_scanner")
    extensions.load(con, "ducklake")
    if create:
        Path(data).mkdir(parents=True, exist_ok=True)
    elif sqlite and not os.access(study, os.W_OK):
        catalog = f"sqlite:{_private_copy(study / CATALOG)}"
    busy = f", META_BUSY_TIMEOUT {BUSY_TIMEOUT_MS}, META_JOURNAL_MODE 'WAL'" if sqlite else ""
    try:
        con.execute(f"ATTACH {sql_literal('ducklake:' + catalog)} AS {LAKE} (DATA_PATH "
                    f"{sql_literal(data.rstrip('/') + '/')}, OVERRIDE_DATA_PATH true, DATA_INLINING_ROW_LIMIT 0{busy})")
    except duckdb.Error as e:
        if is_busy(e):
            raise
        where = study / CATALOG if sqlite else catalog.split(" password", 1)[0]
        raise StoreError(f"{study}: the study's catalog {where} cannot be opened ({first_line(e)}); if the file "
                         "was damaged, restore it from a backup of this folder") from None
    if create:
        have = _tables(con)
        if len(have) < len(SCHEMAS):  # a new study, one killed before its tables were made, or an older schema
            with transaction(con, "create", {"tables": ", ".join(sorted(set(SCHEMAS) - have))}):
                create_tables(con, have)
        evolve(con)


def evolve(con: duckdb.DuckDBPyConnection) -> None:
    """Add the columns this skintrack declares that an older study's tables lack (one version; their old
    rows read as null, and `generations.backfill` then fills what can be recovered; the analyses' integer
    keys are computed: `keys`). A session index that lacks columns is rebuilt whole in the same version (its
    rows are derived, so every one is filled)."""
    have = columns_at(con, None)
    declared = {**TABLES, "session_index": BASE["session_index"], "measures": BASE["measures"]}
    missing = [(t, name, kind) for t, schema in declared.items()
               for name, kind in zip(schema.names, schema.types) if t in have and name not in have[t]]
    if missing:
        with transaction(con, "upgrade", {"columns added": ", ".join(f"{t}.{n}" for t, n, _ in missing)}):
            for table, name, kind in missing:
                con.execute(f"ALTER TABLE {LAKE}.main.{table} ADD COLUMN {sql_identifier(name)} {_SQL_TYPES[kind]}")
            keyed = [t for t, name, _ in missing if name == keys.KEY]
            for table in keyed:  # the keys of the rows an older skintrack wrote; the index gets its own below
                if table != "session_index":
                    con.execute(f"UPDATE {LAKE}.main.{table} SET {keys.KEY} = {keys.KEY_SQL.format(id='analysis_id')}")
            if keyed:
                keys.check(con, LAKE, everything=True)
            if any(t == "session_index" for t, _, _ in missing):
                from . import session_index  # it reads this module's tables

                session_index.update(con)


_SQL_TYPES = {pa.string(): "VARCHAR", pa.float64(): "DOUBLE", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN",
              pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ", pa.timestamp("us"): "TIMESTAMP"}


def column_rows(con: duckdb.DuckDBPyConnection, version: int | None) -> list[tuple[str, str, bool]]:
    """(table, column, whether it allows nulls) of the lake at `version` (None: the newest), in column order."""
    at = f"(SELECT max(snapshot_id) FROM {META}.ducklake_snapshot)" if version is None else str(int(version))

    def live(x):
        return f"{x}.begin_snapshot <= {at} AND ({x}.end_snapshot IS NULL OR {x}.end_snapshot > {at})"

    return [(t, c, bool(nulls)) for t, c, nulls in con.execute(
        f"SELECT t.table_name, c.column_name, c.nulls_allowed FROM {META}.ducklake_column c JOIN "
        f"{META}.ducklake_table t USING (table_id) WHERE c.parent_column IS NULL AND {live('c')} AND {live('t')} "
        "ORDER BY c.column_order").fetchall()]


def columns_at(con: duckdb.DuckDBPyConnection, version: int | None) -> dict[str, list]:
    """{table: [column, ...]} of the lake at `version` (None: the newest)."""
    out: dict[str, list] = {}
    for table, column, _ in column_rows(con, version):
        out.setdefault(table, []).append(column)
    return out


_COPIES: list = []  # the temporary folders of private catalog copies, removed when the process ends


def _private_copy(catalog: Path) -> Path:
    """A copy of a read-only study's catalog (with its WAL, if any) in a temporary folder of this process."""
    import tempfile

    folder = tempfile.TemporaryDirectory(prefix="skintrack-catalog-")
    _COPIES.append(folder)
    for suffix in ("", "-wal"):
        if Path(f"{catalog}{suffix}").exists():
            shutil.copyfile(f"{catalog}{suffix}", Path(folder.name) / f"{CATALOG}{suffix}")
    return Path(folder.name) / CATALOG


def _tables(con) -> set:
    return {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ?",
                                      [LAKE]).fetchall()}


def create_tables(con: duckdb.DuckDBPyConnection, have: set = frozenset(), database: str = LAKE) -> None:
    """Create the study's tables that are missing (not in `have`), with the columns of their Arrow schemas."""
    for name, schema in SCHEMAS.items():
        if name not in have:
            con.register("_empty", schema.empty_table())
            kinds = con.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM _empty)").fetchall()
            con.unregister("_empty")
            required = {keys.KEY} if name in keys.KEYED and database == LAKE else set()  # (tables.keys)
            columns = ", ".join(f"{sql_identifier(c)} {t}{' NOT NULL' * (c in required)}" for c, t in kinds)
            con.execute(f"CREATE TABLE {database}.main.{name} ({columns})")


def tables_at(con: duckdb.DuckDBPyConnection, version: int | None) -> set:
    """The tables the lake held at `version` (an older study, or one killed before its tables were made,
    holds fewer than this skintrack writes)."""
    if version is None:
        return set()
    return {r[0] for r in con.execute(f"SELECT table_name FROM {META}.ducklake_table WHERE begin_snapshot <= ? AND "
                                      "(end_snapshot IS NULL OR end_snapshot > ?)", [version, version]).fetchall()}


def latest_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The newest committed version of the attached lake (None for a study not yet on disk)."""
    try:
        return con.execute(f"SELECT id FROM {LAKE}.current_snapshot()").fetchall()[0][0]
    except duckdb.Error:
        return None


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection, command: str, info: dict | None = None):
    """One commit: everything written inside is visible together, as one new version, or not at all.

    The version records `command`, who ran it (user@host) and `info` (what changed; never the command
    line, which may hold a key). Yields `info` so that the writer can fill it in as it goes."""
    info = {} if info is None else info
    con.execute("BEGIN TRANSACTION")
    try:
        yield info
        commit(con, command, info)
    except BaseException:
        rollback(con)
        raise


def commit(con: duckdb.DuckDBPyConnection, command: str, info: dict) -> None:
    """Commit the open transaction as a version made by `command` that changed `info`."""
    keys.check(con, LAKE)
    con.execute(f"CALL {LAKE}.set_commit_message(?, ?, extra_info => ?)",
                [f"{getpass.getuser()}@{socket.gethostname()}", command, json.dumps(info, default=str)])
    con.execute("COMMIT")


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the open transaction, if any (its data files are orphans that compaction deletes)."""
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


def insert(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Append Arrow rows to a lake table, by column name and in their order; `sessions` and `subjects` first
    gain the columns they do not have yet (a manifest's or subjects CSV's own columns)."""
    if not rows.num_rows:
        return
    if table in keys.KEYED:
        rows = keys.with_keys(rows)
        if table in keys.ORIGINS:
            keys.note(con, rows)
    con.register("_rows", rows.combine_chunks())  # one batch: DuckDB reads several in parallel, out of order
    try:
        if table not in TABLES:
            have = {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND "
                                              "table_name = ?", [LAKE, table]).fetchall()}
            for name, kind in con.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM _rows)").fetchall():
                if name not in have:
                    con.execute(f"ALTER TABLE {LAKE}.main.{table} ADD COLUMN {sql_identifier(name)} {kind}")
        con.execute(f"INSERT INTO {LAKE}.main.{table} BY NAME SELECT * FROM _rows")
    finally:
        con.unregister("_rows")


def replace(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Replace the rows with these keys (`KEYS`: a session's new assignment, a subject's new columns)."""
    if rows.num_rows:
        key = KEYS[table]
        con.execute(f"DELETE FROM {LAKE}.main.{table} WHERE {key} IN (SELECT unnest(?))",
                    [rows.column(key).to_pylist()])
        insert(con, table, rows)


def held(con: duckdb.DuckDBPyConnection, ids: list[str]) -> set:
    """Which of these analysis ids the lake already holds (looked up, not read whole)."""
    if not ids:
        return set()
    return {r[0] for r in con.execute(f"SELECT analysis_id FROM {LAKE}.main.analyses WHERE analysis_id IN "
                                      "(SELECT unnest(?))", [ids]).fetchall()}


def seen_sources(con: duckdb.DuckDBPyConnection, files: list[tuple[str, int, int]]) -> dict:
    """{path: analysis_id} of the files (path, size, mtime_ns) ingested before in this very state."""
    if not files:
        return {}
    con.register("_files", pa.table(list(zip(*files)), names=["source", "size", "mtime_ns"]))
    try:
        return dict(con.execute(f"SELECT source, any_value(analysis_id) FROM {LAKE}.main.sources "
                                "JOIN _files USING (source, size, mtime_ns) GROUP BY source").fetchall())
    finally:
        con.unregister("_files")


def current_rows(con: duckdb.DuckDBPyConnection, table: str, key: str, keys=None) -> dict:
    """The stored rows of a metadata table (sessions, subjects) by key; only those with `keys` if given."""
    where = f"WHERE {key} IN (SELECT unnest(?))" if keys is not None else ""
    df = con.execute(f"SELECT * FROM {LAKE}.main.{table} {where}", [list(keys)] if keys is not None else None).to_arrow_table().to_pandas()
    return {r[key]: r for r in df.to_dict("records")}


def changed_rows(current: dict, key: str, rows: list[dict]) -> list[dict]:
    """The rows that differ from the `current` row with the same key (ignoring `assigned_at`)."""

    def same(a, b):
        return (a is None or a != a) and (b is None or b != b) or a == b

    return [r for r in rows if r[key] not in current or not all(
        same(v, current[r[key]].get(k)) for k, v in r.items() if k != "assigned_at")]


def plan_text(con: duckdb.DuckDBPyConnection, version: int | None, table: str = "plans") -> str | None:
    """The plan (or with `table="measure_catalogs"`, the measures catalog) saved last at `version` (None
    when none was saved)."""
    if version is not None and table not in tables_at(con, version):
        return None
    at = f" AT (VERSION => {int(version)})" if version is not None else ""
    row = con.execute(f"SELECT text FROM {LAKE}.main.{table}{at} ORDER BY saved_at DESC LIMIT 1").fetchall()
    return row[0][0] if row else None


def save_plan(con: duckdb.DuckDBPyConnection, text: str) -> None:
    """Keep this plan text as a new version ("plan")."""
    with transaction(con, "plan", {"saved": "plan.toml"}):
        insert(con, "plans", pa.table({"text": [text], "saved_at": [dt.datetime.now(dt.timezone.utc)]},
                                      schema=BASE["plans"]))


def record_event(study, batch: str, event: str, detail: str) -> None:
    """Keep an instrument event (a change the sentinel caught inside a batch, a drift a user accepted) as a
    new version whose command is the event."""
    with locked(Path(study)):
        con = connect(study, write=True)
        try:
            with transaction(con, event.replace(" ", "-"), {"batch": batch, "detail": detail}):
                insert(con, "instrument", pa.table({"at": [dt.datetime.now(dt.timezone.utc)], "batch": [batch],
                                                    "event": [event], "detail": [detail]},
                                                   schema=BASE["instrument"]))
        finally:
            con.close()


# ---- locks and files ----------------------------------------------------------------------------------
@contextlib.contextmanager
def exclusive(study: Path, name: str, busy: str):
    """Hold the lock file `name` in the study folder (created if needed), or refuse at once with `busy`.
    The lock goes with the process (flock), so a killed holder never leaves it behind."""
    study = Path(study)
    try:
        study.mkdir(parents=True, exist_ok=True)
        fh = open(study / name, "w")
    except OSError as e:
        raise UsageError(f"{study}: cannot write to this study folder ({e.strerror})") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{study}: {busy}") from None
        yield study


@contextlib.contextmanager
def locked(study: Path):
    """Hold the study's write lock (one writer at a time on this machine); clears stale temporary files.
    A full disk met by DuckDB inside is raised as the OSError (ENOSPC) it is, as for any other write."""
    with exclusive(study, ".lock", "another skintrack process is writing to this study") as study:
        shutil.rmtree(study / ".staging", ignore_errors=True)
        try:
            yield study
        except duckdb.Error as e:
            if "No space left on device" in str(e):  # DuckDB's words for ENOSPC
                raise OSError(errno.ENOSPC, "No space left on device", str(study)) from None
            if is_busy(e) or isinstance(e, duckdb.TransactionException):
                raise  # the caller may try again
            raise damaged(study, e, writing=True) from None


def write_atomic(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write bytes to `path` through a temporary file and a rename, so it is whole or absent.

    The temporary file is `.NAME.PID.tmp` beside `path`, or in `tmp_dir` (same file system) so that
    whoever cleans that folder removes what a crash or a full disk left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = (Path(tmp_dir) if tmp_dir else path.parent) / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# ---- small tables held in memory ----------------------------------------------------------------------
DERIVED = {"analyses": ("analyses_raw", "sessions"),
           "metrics": ("scores", "counts", "areas", "severities", "tones", "wrinkles", "analyses_raw", "measures")}
DERIVED["metrics_wide"] = DERIVED["analyses"] + DERIVED["metrics"]
LEAVES = ("analyses_raw", *[t for t in TABLES if t != "analyses"], "sessions", "subjects", "session_index",
          "instrument", "measures", "key_collisions")  # the views that each read one table of the lake
OPENED = ("measures", "session_index", "subjects", "sessions", "key_collisions")  # what opening a version reads
_NAMED = re.compile(r"\b(" + "|".join(sorted({*LEAVES, *DERIVED}, key=len, reverse=True)) + r")\b")


def hold_in_memory(con: duckdb.DuckDBPyConnection, query: str, held: set, sizes: dict) -> None:
    """Copy into memory, once per version, the small tables behind the views `query` names, and point their
    views at the copies. Each query over the lake pays its catalog reads (~15 ms on SQLite, more on
    PostgreSQL) before any row; a trial-sized report runs hundreds. `held` names the views already copied,
    `sizes` the Parquet bytes per lake table (`lake_sizes`); a table above `HELD_BYTES` stays in the lake.

    >>> sorted(n for n in _NAMED.findall("SELECT * FROM metrics JOIN subjects USING (subject_id)"))
    ['metrics', 'subjects']
    """
    small = _small({leaf for name in _NAMED.findall(query) for leaf in DERIVED.get(name, (name,))} - held, sizes)
    if small:
        with _one_transaction(con):
            _hold(con, small)
        held.update(small)


def _small(views, sizes: dict) -> list:
    """Those of `views` whose lake table is at most `HELD_BYTES` (`sizes`: `lake_sizes`)."""
    return [v for v in sorted(views) if sizes.get("analyses" if v == "analyses_raw" else v, 0) <= HELD_BYTES]


def _hold(con: duckdb.DuckDBPyConnection, views: list) -> None:
    """Copy `views` into memory and point them at the copies (in the caller's transaction)."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {HELD}")
    for view in views:
        con.execute(f"CREATE OR REPLACE TABLE {HELD}.{view} AS SELECT * FROM main.{view}")
        con.execute(f"CREATE OR REPLACE VIEW main.{view} AS SELECT * FROM {HELD}.{view}")


def read_version(con: duckdb.DuckDBPyConnection, version: int, held: set) -> tuple[dict, tuple | None, str | None]:
    """What a reader reads first at every version, in one transaction (DuckLake then reads its catalog once,
    not once per statement: ~50 ms less per open): (`lake_sizes`, (the plan,), the measures catalog) kept at
    `version`, with the small tables behind the plan and the measures (`OPENED`) held in memory. A damaged
    file among them fails none of it: those tables stay in the lake and the plan unread (None), so that the
    query that needs one names the file, and `skintrack check` still opens the study to list it."""
    try:
        with _one_transaction(con):
            sizes = lake_sizes(con)
            plan, catalog = (plan_text(con, version, table) for table in ("plans", "measure_catalogs"))
            small = _small(set(OPENED) - held, sizes)
            _hold(con, small)
    except duckdb.Error as e:
        if is_busy(e):
            raise
        return lake_sizes(con), None, plan_text(con, version, "measure_catalogs")
    held.update(small)
    return sizes, (plan,), catalog


def lake_sizes(con: duckdb.DuckDBPyConnection) -> dict:
    """{lake table: bytes of its Parquet files}; lets a lake above `ONE_THREAD_BYTES` be read on every core
    (a reader starts on one: between the many tiny queries of a trial-sized study DuckDB's idle workers
    spin, half a second of CPU to open one)."""
    sizes = dict(con.execute(f"SELECT table_name, file_size_bytes FROM ducklake_table_info({sql_literal(LAKE)})")
                 .fetchall()) if _is_lake(con) else {}
    if sum(sizes.values()) > ONE_THREAD_BYTES:
        con.execute("RESET threads")
    return sizes


def _is_lake(con) -> bool:
    return con.execute("SELECT type FROM duckdb_databases() WHERE database_name = ?", [LAKE]).fetchall() == [("ducklake",)]


# ---- views ------------------------------------------------------------------------------------------
def create_views(con: duckdb.DuckDBPyConnection, version: int | None) -> None:
    """(Re)create one view per table, plus `metrics` and `metrics_wide`, over the lake at `version` (in one
    transaction: DuckLake then reads its catalog once, not once per view)."""
    lake = version is not None and _is_lake(con)
    columns = columns_at(con, version) if lake else {t: list(SCHEMAS[t].names) for t in SCHEMAS}
    if set(columns) < set(SCHEMAS) and not con.execute("SELECT count(*) FROM duckdb_databases() WHERE "
                                                       "database_name = ?", [BLANK]).fetchall()[0][0]:
        con.execute(f"ATTACH ':memory:' AS {BLANK}")
        create_tables(con, database=BLANK)
    with _one_transaction(con):
        _create_views(con, version, columns)
    con.execute("SET VARIABLE skintrack_views_at = ?", [version])


def views_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The version `create_views` last showed on this connection (not the lake's newest, which may have moved)."""
    return con.execute("SELECT getvariable('skintrack_views_at')").fetchall()[0][0]


@contextlib.contextmanager
def _one_transaction(con: duckdb.DuckDBPyConnection):
    con.begin()
    try:
        yield
    except BaseException:
        con.rollback()
        raise
    con.commit()


def _index_source(source, columns: dict) -> str:
    """The session index; at a version written before the index kept the capture's QC columns (`CAPTURE`),
    those columns read from their tables, so that every version's capture QC is the same."""
    if "session_index" not in columns or set(CAPTURE) <= set(columns["session_index"]):
        return source("session_index")
    kept = ", ".join(f"i.{c}" for c in BASE["session_index"].names if c in columns["session_index"])
    return (f"SELECT {kept}, CASE WHEN analyses.analysis_id IS NULL THEN 'measures' ELSE 'photo' END AS kind, "
            f"{CAPTURE_SQL} FROM ({source('session_index')}) i LEFT JOIN analyses_raw analyses USING (analysis_id) "
            "LEFT JOIN tones USING (analysis_id)")


def _create_views(con: duckdb.DuckDBPyConnection, version: int | None, columns: dict) -> None:
    at = f" AT (VERSION => {int(version)})" if version is not None else ""
    have = set(columns)

    def source(table):
        if table not in have:
            return f"SELECT * FROM {BLANK}.main.{table}"
        added = [f"CAST(NULL AS {_SQL_TYPES[kind]}) AS {name}" for name, kind in
                 zip(SCHEMAS[table].names, SCHEMAS[table].types) if name not in columns[table]]  # an older study
        return f"SELECT *{''.join(', ' + a for a in added)} FROM {LAKE}.main.{table}{at}"

    for table in TABLES:
        name = "analyses_raw" if table == "analyses" else table
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {source(table)}")
    con.execute("CREATE OR REPLACE VIEW rejects AS SELECT source, reason, max(\"at\") AS \"at\" FROM "
                f"({source('rejects')}) GROUP BY ALL")
    con.execute(f"CREATE OR REPLACE VIEW sessions AS {source('sessions')}")
    con.execute(f"CREATE OR REPLACE VIEW subjects AS SELECT * EXCLUDE (assigned_at) FROM ({source('subjects')})")
    con.execute(f"CREATE OR REPLACE VIEW session_index AS {_index_source(source, columns)}")
    con.execute(f"CREATE OR REPLACE VIEW instrument AS {source('instrument')}")
    con.execute(f"CREATE OR REPLACE VIEW key_collisions AS {source('key_collisions')}")
    con.execute(f"CREATE OR REPLACE VIEW measures AS SELECT * EXCLUDE (assigned_at) FROM ({source('measures')})")
    con.execute(
        "CREATE OR REPLACE VIEW analyses AS SELECT a.analysis_id, s.subject_id, s.visit, s.taken_at, "
        "a.* EXCLUDE (analysis_id), s.* EXCLUDE (analysis_id, subject_id, visit, taken_at, assigned_at) "
        "FROM analyses_raw a LEFT JOIN sessions s USING (analysis_id) WHERE a.sentinel IS NULL")  # the study's own
    wrinkle_cols = ", ".join(f"CAST({m} AS DOUBLE) AS {m}" for m in WRINKLE_MEASURES)
    con.execute(f"""CREATE OR REPLACE VIEW metrics AS
        SELECT analysis_id, 'score.' || metric AS metric, value FROM scores
        UNION ALL SELECT analysis_id, 'count.' || feature || '.' || region, value FROM counts
        UNION ALL SELECT analysis_id, 'area.' || feature || '.' || region, value FROM areas
        UNION ALL SELECT analysis_id, 'severity.' || feature || coalesce('.' || region, ''), value FROM severities
        UNION ALL SELECT analysis_id, 'tone.' || k, v FROM (SELECT analysis_id, ita, ha,
            CAST(ita_class AS DOUBLE) AS ita_class, CAST(ha_class AS DOUBLE) AS ha_class,
            CAST(skin_tone AS DOUBLE) AS skin_tone FROM tones)
            UNPIVOT (v FOR k IN (ita, ha, ita_class, ha_class, skin_tone))
        UNION ALL SELECT analysis_id, 'wrinkle.' || region || '.' || k, v FROM (SELECT analysis_id, region,
            {wrinkle_cols} FROM wrinkles) UNPIVOT (v FOR k IN ({", ".join(WRINKLE_MEASURES)}))
        UNION ALL SELECT analysis_id, 'skin.age', skin_age FROM analyses_raw WHERE skin_age IS NOT NULL
        UNION ALL SELECT analysis_id, 'measure.' || measure, avg(value) FROM measures GROUP BY analysis_id, measure""")
    wide = ", ".join(f"max(m.value) FILTER (WHERE m.metric = '{k}') AS {sql_identifier(k)}" for k in metric_keys())
    con.execute(f"""CREATE OR REPLACE VIEW metrics_wide AS
        SELECT a.analysis_id, a.subject_id, a.visit, a.taken_at, {wide}
        FROM analyses a LEFT JOIN metrics m USING (analysis_id) GROUP BY a.analysis_id, a.subject_id, a.visit,
        a.taken_at""")

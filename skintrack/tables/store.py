"""The study on disk: atomic batches of Parquet files, face-map images, and the DuckDB views over them.

Layout of a study folder::

    DIR/raw/                       verbatim API responses archived by `skintrack analyze`
    DIR/batches/<batch_id>/*.parquet   one file per table; a batch appears by one atomic rename
    DIR/maps/<analysis_id>/<name>.png  decoded face maps
    DIR/.staging/                  batches being written (removed on the next run)

A reader sees a batch whole or not at all, so a crash at any moment leaves a readable study.

Example
-------
>>> import tempfile, duckdb
>>> con = duckdb.connect()
>>> create_views(con, tempfile.mkdtemp())
>>> con.execute("select count(*) from scores").fetchone()
(0,)
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq

from .catalog import metric_keys
from ..errors import UsageError
from .schema import TABLES, WRINKLE_MEASURES

RESPONSE_TABLES = [t for t in TABLES if t not in ("sources",)]


def batches_dir(study: Path) -> Path:
    return Path(study) / "batches"


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
    """Hold the study's write lock (one writer at a time); clears stale staging folders."""
    with exclusive(study, ".lock", "another skintrack process is writing to this study") as study:
        shutil.rmtree(study / ".staging", ignore_errors=True)
        yield study


def _files(study: Path, table: str) -> list[str]:
    return sorted(str(p) for p in batches_dir(study).glob(f"*/{table}.parquet"))


def read_table(study: Path, table: str, columns=None) -> pa.Table | None:
    """All committed rows of one table (None when no batch holds it)."""
    files = _files(study, table)
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files], promote_options="permissive")


def batch_id(parts) -> str:
    """A deterministic batch id: the hash of what the batch holds."""
    h = hashlib.blake2b(digest_size=10)
    for p in parts:
        h.update(str(p).encode() + b"\0")
    return h.hexdigest()


def stage_batch(stage: Path, tables: dict[str, pa.Table]) -> None:
    """Write a batch's tables into its staging folder (invisible to readers)."""
    stage.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, stage / f"{name}.parquet", compression="zstd")


def publish(study: Path, bid: str) -> bool:
    """Make a staged batch visible with one atomic rename. False if that batch was already published."""
    stage, final = Path(study) / ".staging" / bid, batches_dir(study) / bid
    if final.exists():
        shutil.rmtree(stage, ignore_errors=True)
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    _fsync_dir(stage)
    os.rename(stage, final)
    _fsync_dir(final.parent)
    return True


def write_batch(study: Path, bid: str, tables: dict[str, pa.Table]) -> bool:
    """Stage and publish a batch in one step."""
    stage_batch(Path(study) / ".staging" / bid, tables)
    return publish(study, bid)


def drop_ids(stage: Path, ids: set) -> None:
    """Remove the rows of some analyses from a staged (unpublished) batch."""
    for f in stage.glob("*.parquet"):
        t = pq.read_table(f)
        if "analysis_id" in t.column_names:
            keep = pa.compute.invert(pa.compute.is_in(t["analysis_id"], pa.array(list(ids))))
            pq.write_table(t.filter(keep), f, compression="zstd")


def current_rows(study: Path, table: str, key: str) -> dict:
    """The latest stored row of each `key` of a metadata table (sessions, subjects), by key."""
    files = _files(study, table)
    if not files:
        return {}
    con = duckdb.connect()
    current = con.sql(f"SELECT * FROM read_parquet(?, union_by_name = true) QUALIFY row_number() OVER "
                      f"(PARTITION BY {key} ORDER BY assigned_at DESC) = 1", params=[files]).to_arrow_table().to_pandas()
    return {r[key]: r for r in current.to_dict("records")}


def changed_rows(current: dict, key: str, rows: list[dict]) -> list[dict]:
    """The rows that differ from the `current` row with the same key (ignoring `assigned_at`)."""

    def same(a, b):
        return (a is None or a != a) and (b is None or b != b) or a == b

    return [r for r in rows if r[key] not in current or not all(
        same(v, current[r[key]].get(k)) for k, v in r.items() if k != "assigned_at")]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


# ---- views ------------------------------------------------------------------------------------------
_DUCK = {"string": "VARCHAR", "double": "DOUBLE", "int64": "BIGINT", "bool": "BOOLEAN",
         "timestamp[us, tz=UTC]": "TIMESTAMPTZ"}


def _empty(schema: pa.Schema) -> str:
    cols = ", ".join(f"CAST(NULL AS {_DUCK.get(str(f.type), 'STRUCT(x DOUBLE, y DOUBLE)[]')}) AS {f.name}"
                     for f in schema)
    return f"SELECT {cols} WHERE false"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _source(study: Path, table: str, schema: pa.Schema | None) -> str:
    files = _files(study, table)  # an explicit list: a study path holding [, ?, * is never read as a pattern
    if files:
        return f"SELECT * FROM read_parquet([{', '.join(map(_literal, files))}], union_by_name = true)"
    if schema is None:
        return None
    return _empty(schema)


def quote(name: str) -> str:
    """A SQL identifier, quoted (a double quote inside is doubled), for names that come from data or users."""
    return '"' + name.replace('"', '""') + '"'


def create_views(con: duckdb.DuckDBPyConnection, study) -> None:
    """(Re)create one view per table, plus `metrics` and `metrics_wide`, over the study's Parquet files."""
    study = Path(study)
    for table, schema in TABLES.items():
        name = "analyses_raw" if table == "analyses" else table
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {_source(study, table, schema)}")
    con.execute("CREATE OR REPLACE VIEW rejects AS SELECT source, reason, max(\"at\") AS \"at\" FROM "
                f"({_source(study, 'rejects', TABLES['rejects'])}) GROUP BY ALL")
    sessions = _source(study, "sessions", None)
    if sessions is None:
        sessions = ("SELECT NULL::VARCHAR AS analysis_id, NULL::VARCHAR AS subject_id, NULL::VARCHAR AS visit, "
                    "NULL::TIMESTAMP AS taken_at, NULL::TIMESTAMPTZ AS assigned_at WHERE false")
    con.execute(f"CREATE OR REPLACE VIEW sessions AS SELECT * FROM ({sessions}) "
                "QUALIFY row_number() OVER (PARTITION BY analysis_id ORDER BY assigned_at DESC) = 1")
    subjects = _source(study, "subjects", None) or (
        "SELECT NULL::VARCHAR AS subject_id, NULL::TIMESTAMPTZ AS assigned_at WHERE false")
    con.execute(f"CREATE OR REPLACE VIEW subjects AS SELECT * EXCLUDE (assigned_at) FROM ({subjects}) "
                "QUALIFY row_number() OVER (PARTITION BY subject_id ORDER BY assigned_at DESC) = 1")
    con.execute(
        "CREATE OR REPLACE VIEW analyses AS SELECT a.analysis_id, s.subject_id, s.visit, s.taken_at, "
        "a.* EXCLUDE (analysis_id), s.* EXCLUDE (analysis_id, subject_id, visit, taken_at, assigned_at) "
        "FROM analyses_raw a LEFT JOIN sessions s USING (analysis_id)")
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
        UNION ALL SELECT analysis_id, 'skin.age', skin_age FROM analyses_raw WHERE skin_age IS NOT NULL""")
    wide = ", ".join(f"max(m.value) FILTER (WHERE m.metric = '{k}') AS {quote(k)}" for k in metric_keys())
    con.execute(f"""CREATE OR REPLACE VIEW metrics_wide AS
        SELECT a.analysis_id, a.subject_id, a.visit, a.taken_at, {wide}
        FROM analyses a LEFT JOIN metrics m USING (analysis_id) GROUP BY a.analysis_id, a.subject_id, a.visit,
        a.taken_at""")


"""Convert a study written before the DuckLake store (atomic batch folders of Parquet) into a lake.

Each old batch becomes one version, oldest first, so a manifest that re-assigned sessions stays in the
history; every row is kept. The old folders are removed only after the last version has been committed
(a crash before that leaves them, and the next open converts again from scratch).

Example
-------
>>> import shutil, tempfile
>>> from pathlib import Path
>>> old = Path(tempfile.mkdtemp()) / "study"
>>> _ = shutil.copytree(Path(__file__).parents[2] / "tests" / "fixtures" / "old-layout-study", old)
>>> upgrade(old)["analyses"]
14
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq

from ..errors import UsageError
from . import session_index, store
from .plan import FILE as PLAN_FILE

_TIME = {"analyses": "ingested_at", "rejects": "at", "sessions": "assigned_at", "subjects": "assigned_at"}


def upgrade(study) -> dict:
    """Convert the old batch folders of `study` into the lake; returns the rows converted per table."""
    study = Path(study)
    if not store.is_old_layout(study):
        raise UsageError(f"{study}: no batch folders to convert (this study is already current)")
    with store.locked(study):
        batches = sorted((_when(b), b) for b in (study / "batches").iterdir() if b.is_dir())
        for leftover in (study / store.CATALOG, study / store.DATA):  # a conversion that did not finish
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        con = store.connect(study, write=True)
        counts: dict[str, int] = {}
        for _, batch in batches:
            with store.transaction(con, "upgrade", {"batch": batch.name}) as info:
                touched = set()
                for f in sorted(batch.glob("*.parquet")):
                    table, rows = f.stem, pq.read_table(f)
                    if table in store.KEYS:
                        store.replace(con, table, rows)
                    else:
                        store.insert(con, table, rows)
                    if table == "sessions":
                        touched |= _subjects_of(con, rows)
                    counts[table] = counts.get(table, 0) + rows.num_rows
                    info[table] = rows.num_rows
                session_index.update(con, touched)
        plan = study / PLAN_FILE
        if plan.exists():
            store.save_plan(con, plan.read_text(encoding="utf-8"))
        con.close()
        shutil.rmtree(study / "batches")
    return counts


def _subjects_of(con, sessions: pa.Table) -> set:
    """The subjects a batch of sessions assigns to, and those its analyses were assigned to before."""
    ids = sessions.column("analysis_id").to_pylist()
    before = con.execute(f"SELECT DISTINCT subject_id FROM {store.LAKE}.main.session_index WHERE analysis_id IN "
                         "(SELECT unnest(?))", [ids]).fetchall()
    return set(sessions.column("subject_id").to_pylist()) | {r[0] for r in before}


def _when(batch: Path):
    """When an old batch was written: the earliest time its rows carry (batches hold no other order)."""
    times = []
    for table, column in _TIME.items():
        f = batch / f"{table}.parquet"
        if f.exists():
            col = pq.read_table(f, columns=[column]).column(column)
            if col.null_count < len(col):
                times.append(pa.compute.min(col).as_py().timestamp())
    return min(times, default=0.0)


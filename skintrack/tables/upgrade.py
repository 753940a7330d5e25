"""Convert a study written before the DuckLake store (atomic batch folders of Parquet) into a lake.

Each old batch becomes one version, oldest first, so a manifest that re-assigned sessions stays in the
history; every row is kept. The conversion is safe to stop at any moment and finishes when run again:

1. each batch is committed as one version that names it (``batch``); a run after a crash skips the
   batches already committed and converts the rest, never starting over;
2. once every batch is in the lake, ``batches/`` is renamed to ``.batches.converted`` (one atomic step),
   and only then deleted; a deletion that stops part-way leaves a folder no one reads as a study.

A lake that holds versions is never deleted. A folder holding both batches and a lake written by other
commands (an ingest into a copy, say) is refused, naming both, rather than guessed at.

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

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq

from ..errors import StoreError, UsageError
from . import session_index, store
from .plan import FILE as PLAN_FILE

_TIME = {"analyses": "ingested_at", "rejects": "at", "sessions": "assigned_at", "subjects": "assigned_at"}
CONVERTED = ".batches.converted"  # batches/ once every batch is in the lake, until it is deleted


def upgrade(study) -> dict:
    """Convert the old batch folders of `study` into the lake; returns the rows converted per table."""
    with store.locked(Path(study)):
        return upgrade_locked(study)


def upgrade_locked(study) -> dict:
    """`upgrade`, for a caller that holds the study's write lock (an ingest into an old study)."""
    study = Path(study)
    if not store.is_old_layout(study):
        raise UsageError(f"{study}: no batch folders to convert (this study is already current)")
    con = store.connect(study, write=True)
    try:
        counts = _convert(con, study)
    finally:
        con.close()
    (study / "batches").rename(study / CONVERTED)  # atomic: from here on the folder is no old study
    shutil.rmtree(study / CONVERTED, ignore_errors=True)
    return counts


def _convert(con, study: Path) -> dict:
    """Commit each batch not yet in the lake as one version; the counts of rows converted per table."""
    done, others = _converted(con)
    batches = sorted((_when(b), b.name, b) for b in (study / "batches").iterdir() if b.is_dir())
    todo = [b for _, name, b in batches if name not in done]
    if others and todo:
        raise StoreError(f"{study}: holds both old batch folders not yet converted ({len(todo)}, in batches/) and "
                         f"a store written by {', '.join(sorted(others))}; move batches/ out of the folder, then "
                         "ingest from it if its data is wanted")
    counts: dict[str, int] = {}
    for batch in todo:
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
    if todo and plan.exists():
        store.save_plan(con, plan.read_text(encoding="utf-8"))
    return counts


def _converted(con) -> tuple[set, set]:
    """(the names of the batches already committed, the other commands that wrote to the lake)."""
    done, others = set(), set()
    for command, info in con.execute(f"SELECT commit_message, commit_extra_info FROM {store.LAKE}.snapshots()"
                                     ).fetchall():
        info = json.loads(info) if isinstance(info, str) else {}
        if command == "upgrade" and "batch" in info:
            done.add(info["batch"])
        elif command not in (None, "create", "upgrade", "plan"):
            others.add(command)
    return done, others


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

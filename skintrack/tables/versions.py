"""A study's versions: the history of its commits, the readers holding a version, and compaction.

Every write (ingest, manifest or subjects change, plan change, compaction, upgrade) is one numbered
version. `history` lists them; `skintrack.open(DIR, version=N)` reads one.

The expiry policy: versions are kept until `compact(..., keep_days=N)` is asked to drop those older than
N days. Even then the newest version is kept, and so is every version an open reader on this machine is
holding (and every version after it), so that nothing is expired under a reader. Files that no version
needs any more are deleted only by that same call, and only once no reader holds a version older than the
newest (a query of such a reader may have listed files merged since).

Example
-------
>>> from skintrack.demo import demo_study
>>> history(demo_study().con)["command"].iloc[-1] in ("ingest", "plan", "compact")
True
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import uuid
from pathlib import Path

import duckdb
import pandas as pd

from ..errors import StoreError, UsageError, finite
from . import store
from .store import LAKE

SMALL_FILES = 64  # compact automatically once a table is spread over more data files than this
ORPHAN_AGE = dt.timedelta(days=1)  # files no version lists, left by a crashed writer; younger ones may be in flight
SHARED_GRACE = dt.timedelta(hours=1)  # a shared catalog's readers elsewhere are not marked: files they may be
# reading (merged or expired less than this ago) wait for a later compaction


def history(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """One row per kept version: version, time, command, by (user@host), changed (what it did)."""
    rows = con.execute(f"SELECT snapshot_id, snapshot_time, commit_message, author, commit_extra_info, changes "
                       f"FROM {LAKE}.snapshots() ORDER BY snapshot_id").to_arrow_table().to_pandas()
    out = []
    for version, time, command, author, info, changes in rows.itertuples(index=False):
        info = json.loads(info) if isinstance(info, str) else {}
        changes = changes if isinstance(changes, (dict, list)) else {}  # a map arrives as (key, value) pairs
        command = command if isinstance(command, str) else None
        out.append({"version": version, "time": time, "command": command or _engine_command(changes),
                     "by": author if isinstance(author, str) else "", "changed": _summary(info) or _engine_summary(changes)})
    return pd.DataFrame(out, columns=["version", "time", "command", "by", "changed"])


def _summary(info: dict) -> str:
    return ", ".join(f"{v} {k}" if not isinstance(v, str) else f"{k} {v}" for k, v in info.items() if v not in (0, None))


def _engine_command(changes) -> str:
    return "create" if {"schemas_created", "tables_created"} & set(dict(changes)) else "(engine)"


def _engine_summary(changes) -> str:
    return "; ".join(k.replace("_", " ") for k in dict(changes))


# ---- readers -------------------------------------------------------------------------------------------
class Reader:
    """Marks the version an open Study reads, so that compaction never expires it (a file in
    `.readers/` holding a shared lock for as long as the reader lives; a crashed reader's lock goes away).
    Without write access the reader is simply not marked. A process forked from the reader's makes a mark of
    its own: it never moves or removes the mark of the process it came from."""

    def __init__(self, study: Path):
        self.study, self.path, self.pid, self.fh = Path(study), None, None, None

    def hold(self, version: int | None) -> None:
        if version is None:
            return
        with contextlib.suppress(OSError):
            if self.pid != os.getpid():  # none yet, or that of the process this one was forked from
                self.pid, self.fh = os.getpid(), None  # (closing a forked copy of a lock's file keeps the lock)
                self.path = self.study / ".readers" / f"{self.pid}-{uuid.uuid4().hex[:8]}"
            if self.fh is None:  # (tried again while it cannot be made: a read-only folder)
                self.path.parent.mkdir(exist_ok=True)
                self.fh = self._locked_mark()
            self.fh.seek(0)
            self.fh.truncate()
            self.fh.write(str(version))
            self.fh.flush()

    def _locked_mark(self):
        """The mark, open and locked. `held_versions` removes an unlocked mark: one it removed between our open and
        our lock is made again."""
        while True:
            fh = open(self.path, "a+")
            fcntl.flock(fh, fcntl.LOCK_SH)
            try:
                if os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino:
                    return fh
            except FileNotFoundError:
                pass
            fh.close()

    def close(self) -> None:
        if self.fh is not None:
            if self.pid == os.getpid():
                with contextlib.suppress(OSError):
                    self.path.unlink()
            self.fh.close()
            self.fh = None

    __del__ = close


def held_versions(study: Path) -> dict[str, int]:
    """{reader: the version it holds} of the open readers (a reader is "<process id>-<random>"); the marks of
    readers that are gone are removed."""
    out = {}
    for mark in (Path(study) / ".readers").glob("*"):
        with contextlib.suppress(OSError, ValueError), open(mark, "r+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # succeeds only when no reader holds it
            except BlockingIOError:
                out[mark.name] = int(fh.read().strip() or 0)
                continue
            mark.unlink()
    return out


# ---- compaction --------------------------------------------------------------------------------------------
def small_files(con: duckdb.DuckDBPyConnection) -> int:
    """The most data files any one table is spread over."""
    row = con.execute(f"SELECT max(file_count) FROM ducklake_table_info('{LAKE}')").fetchall()
    return row[0][0] or 0


def compact(con: duckdb.DuckDBPyConnection, study: Path, keep_days: float | None = None,
            automatic: bool = False) -> dict:
    """Merge small data files (one version, "compact"); with `keep_days`, also expire the versions older
    than that (never the newest, never one a reader holds) and delete the files no kept version needs.
    Returns what it did. The caller holds the study's write lock."""
    if keep_days is not None and finite(keep_days, "keep_days") < 0:
        raise UsageError(f"keep_days {keep_days}: give a number of days of versions to keep (0 or more)")
    before = small_files(con)
    with store.transaction(con, "compact", {"automatic": automatic or None}) as info:
        con.execute(f"CALL ducklake_merge_adjacent_files('{LAKE}')")
        con.execute(f"CALL ducklake_rewrite_data_files('{LAKE}')")
        info["most files per table"] = f"{before} -> {small_files(con)}"
    done = {"files_before": before, "files_after": small_files(con), "expired": 0, "deleted": 0}
    if keep_days is not None:
        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=keep_days)
        latest = store.latest_version(con)
        held = held_versions(study)
        oldest_held = min([*held.values(), latest])
        expire = [int(v) for v in con.execute(f"SELECT snapshot_id FROM {LAKE}.snapshots() WHERE snapshot_time < ? "
                                              "AND snapshot_id < ?", [cutoff, oldest_held]).to_arrow_table().to_pandas()["snapshot_id"]]
        if expire:
            con.execute(f"CALL ducklake_expire_snapshots('{LAKE}', versions => ?)", [expire])
        deleted, waiting = delete_unneeded(con, oldest_held, latest, store.is_shared(study))
        orphans = con.execute(f"CALL ducklake_delete_orphaned_files('{LAKE}', older_than => ?)",
                              [dt.datetime.now(dt.timezone.utc) - ORPHAN_AGE]).fetchall()
        done.update(expired=len(expire), deleted=deleted + len(orphans), waiting=waiting,
                    waiting_for=sorted({reader.split("-")[0] for reader, v in held.items() if v < latest}))
    return done


def delete_unneeded(con: duckdb.DuckDBPyConnection, oldest_held: int, latest: int, shared: bool) -> tuple[int, int]:
    """Delete the data files no kept version lists (merged into others, or only in expired versions): (deleted,
    waiting). While a reader on this machine holds a version older than the newest, a query of it may have
    listed files merged since, so none is deleted yet: a later compaction deletes them. A `shared` catalog's
    readers on other machines are not marked: there only files let go `SHARED_GRACE` ago or more are deleted.
    (DuckLake's `older_than` serves only there: on a SQLite catalog it compares times as text in two formats,
    and so matches every file.)"""
    def waiting():
        return con.execute(f"SELECT count(*) FROM {store.META}.ducklake_files_scheduled_for_deletion").fetchall()[0][0]

    if oldest_held < latest:
        return 0, waiting()
    if not shared:
        return len(con.execute(f"CALL ducklake_cleanup_old_files('{LAKE}', cleanup_all => true)").fetchall()), 0
    deleted = con.execute(f"CALL ducklake_cleanup_old_files('{LAKE}', older_than => ?)",
                          [dt.datetime.now(dt.timezone.utc) - SHARED_GRACE]).fetchall()
    return len(deleted), waiting()


def compact_study(study, keep_days: float | None = None) -> dict:
    """`compact` under the study's write lock, tried again while readers keep the catalog busy. A damaged
    store is refused first: merging or expiring around a missing file could only lose more."""
    from .check import store_problems

    damaged = store_problems(study)
    if len(damaged):
        first = damaged.iloc[0]
        raise StoreError(f"{study}: not compacted: {len(damaged)} damaged file(s), first {first['where']}: "
                         f"{first['problem']}; `skintrack check {study}` lists them")

    def run():
        with store.locked(Path(study)):
            con = store.connect(study, write=True)
            try:
                return compact(con, Path(study), keep_days)
            finally:
                con.close()

    return store.retry_busy(run)


def compact_if_needed(con: duckdb.DuckDBPyConnection, study: Path) -> bool:
    """Compact when some table has grown past `SMALL_FILES` data files (called after each ingest)."""
    if small_files(con) <= SMALL_FILES:
        return False
    compact(con, study, automatic=True)
    return True

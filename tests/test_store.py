"""The versioned study store (DuckLake): transactions, versions and time travel, readers and writers,
compaction, a team study on a real PostgreSQL server, and the upgrade of a study in the old layout."""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import skintrack
from skintrack.tables import check, store, versions

from conftest import FIXTURES, debian_install, responses


OLD = FIXTURES / "old-layout-study"


@pytest.fixture
def small(tmp_path, sample):
    """A study of the sample trial's first 6 subjects, with its manifest, subjects and plan."""
    files = responses(sample / "responses", "S0[1-6]_*.json")
    study = tmp_path / "study"
    skintrack.ingest(files, study, manifest=sample / "manifest.csv", subjects=sample / "subjects.csv")
    shutil.copy(sample / "plan.toml", study / "plan.toml")
    return study


def _relabel(sample, tmp_path, old, new) -> Path:
    text = (sample / "manifest.csv").read_text().replace(f",{old},", f",{new},")
    (tmp_path / "m2.csv").write_text(text)
    return tmp_path / "m2.csv"


def test_every_change_is_a_version_and_old_versions_read_as_they_were(small, sample, tmp_path, run_cli):
    s = skintrack.open(small)
    s.plan  # noqa: B018 - a plan not yet kept is kept as a version of its own
    before = s.version
    assert s.sql("select count(*) n from analyses where visit = 'W4'")["n"].tolist() == [6]
    report = skintrack.ingest([sample / "responses"], small, manifest=_relabel(sample, tmp_path, "W4", "Week4"))
    assert report.added == 72  # the other subjects' responses; W4 is now Week4 for everybody
    run_cli("plan", small, "--secondary", "score.rough@W12", check=0)
    run_cli("compact", small, check=0)
    hist = skintrack.open(small).history()
    assert {"create", "ingest", "plan", "compact"} <= set(hist["command"])
    assert hist["version"].is_monotonic_increasing and hist["time"].is_monotonic_increasing
    assert "72 analyses added, 78 sessions assigned" in hist.query("command == 'ingest'")["changed"].iloc[-1]
    now, then = skintrack.open(small), skintrack.open(small, version=before)
    assert now.sql("select count(*) n from analyses where visit = 'W4'")["n"].tolist() == [0]
    assert then.sql("select count(*) n from analyses where visit = 'W4'")["n"].tolist() == [6]
    assert then.sql("select count(*) n from analyses")["n"].tolist() == [24]
    assert [e.metric for e in then.plan.secondary] != ["score.rough"] and \
        [e.metric for e in now.plan.secondary] == ["score.rough"]
    assert then.visits == ["D0", "W4", "W8", "W12"]
    proc = run_cli("history", small, "--csv", check=0)
    assert proc.stdout.startswith("version,time,command,by,changed") and "ingest" in proc.stdout


def test_a_version_not_kept_is_refused_with_the_range(small):
    with pytest.raises(skintrack.UsageError, match=r"version 999: this study keeps versions 0-\d+"):
        skintrack.open(small, version=999)
    for other in (True, 1.0):  # True would have opened version 1
        with pytest.raises(skintrack.UsageError, match=rf"version {other}: this study keeps versions"):
            skintrack.open(small, version=other)
    read = skintrack.open(small).history()["version"].iloc[1]  # a numpy integer: the version it names
    opened = skintrack.open(small, version=read)
    assert opened.version == read and type(opened.version) is int


def test_report_and_export_name_their_version_and_reproduce_it(small, sample, tmp_path, run_cli):
    run_cli("export", small, "--out", tmp_path / "a", "--format", "csv", check=0)
    source = pd.read_csv(tmp_path / "a" / "define.csv")["source"].iloc[0]  # "FOLDER, study version N (committed ...)"
    version = int(re.search(r"study version (\d+) \(committed ", source).group(1))
    assert version == skintrack.open(small).version  # the plan, kept by that export, is part of it
    skintrack.ingest([sample / "responses"], small, manifest=sample / "manifest.csv")  # 72 more analyses
    run_cli("export", small, "--out", tmp_path / "b", "--format", "csv", "--version", version, check=0)
    run_cli("export", small, "--out", tmp_path / "c", "--format", "csv", check=0)
    a, b, c = ((tmp_path / x / "adskin.csv").read_bytes() for x in "abc")
    assert a == b != c
    assert pd.read_csv(tmp_path / "b" / "define.csv")["source"].iloc[0] == source
    out = run_cli("report", small, "--out", tmp_path / "r", "--no-pdf", "--version", version, check=0)
    html = (tmp_path / "r" / "report.html").read_text()
    assert f"study version {version} (committed" in html and out.returncode == 0


def test_a_reader_never_blocks_a_writer_and_keeps_its_version(small, sample):
    reader = skintrack.open(small, version=skintrack.open(small).version)
    n = reader.sql("select count(*) n from analyses")["n"].tolist()
    exe = Path(sys.executable).with_name("skintrack")
    t0 = time.monotonic()
    proc = subprocess.run([str(exe), "ingest", str(sample / "responses"), "--study", str(small), "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and time.monotonic() - t0 < 60, proc.stderr
    assert reader.sql("select count(*) n from analyses")["n"].tolist() == n == [24]
    follower = skintrack.open(small)
    assert follower.sql("select count(*) n from analyses")["n"].tolist() == [96]


def test_a_following_reader_moves_on_after_a_commit(small, sample):
    s = skintrack.open(small)
    first = s.version
    assert s.sql("select count(*) n from analyses")["n"].tolist() == [24]
    skintrack.ingest([sample / "responses"], small)
    assert s.sql("select count(*) n from analyses")["n"].tolist() == [96] and s.version > first


def test_small_tables_held_in_memory_read_as_the_lake_at_each_version(small, sample, monkeypatch):
    """A small study's tables are copied into memory on first use (per version); every view reads the same rows
    as straight from the lake, at an old version and after a commit; a table above the size stays in the lake."""
    old = skintrack.open(small).version
    skintrack.ingest([sample / "responses"], small)
    views = [*store.LEAVES, "analyses", "metrics", "metrics_wide"]

    def every_view(version):
        s = skintrack.open(small, version=version)
        frames = {v: s.sql(f"SELECT * FROM {v}") for v in views}
        held = {r[0] for r in s.con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'held'")
                .fetchall()}
        return frames, held

    for version in (old, None):
        held_frames, held = every_view(version)
        with monkeypatch.context() as m:
            m.setattr(store, "HELD_BYTES", -1)
            lake_frames, none = every_view(version)
        assert held == set(store.LEAVES) and none == set()
        for v in views:
            assert list(held_frames[v].dtypes) == list(lake_frames[v].dtypes), v
            rows = lambda df: sorted(map(repr, df.itertuples(index=False)))  # noqa: E731 - exact, any order
            assert rows(held_frames[v]) == rows(lake_frames[v]), v
    assert len(held_frames["analyses"]) == 96 and len(every_view(old)[0]["analyses"]) == 24


def test_two_writers_on_one_machine_take_turns(small, sample, run_cli):
    with store.locked(small):
        proc = run_cli("ingest", sample / "responses", "--study", small)
    assert proc.returncode == 2 and "another skintrack process is writing to this study" in proc.stderr
    assert run_cli("ingest", sample / "responses", "--study", small, "--quiet").returncode == 0


def _files(study) -> tuple[int, int, int]:
    """(Parquet files on disk, data and delete files the catalog lists, files waiting to be deleted)."""
    con = store.connect(study, views=False)
    data, deletes, waiting = (con.execute(f"SELECT count(*) FROM {store.META}.ducklake_{t}")
                              .fetchall()[0][0] for t in ("data_file", "delete_file", "files_scheduled_for_deletion"))
    return len(list((study / "lake").rglob("*.parquet"))), data + deletes, waiting


def test_expiry_keeps_what_a_reader_holds(small, sample, run_cli):
    held = skintrack.open(small, version=skintrack.open(small).version)
    skintrack.ingest([sample / "responses"], small)
    skintrack.ingest([sample / "responses"], small, manifest=_relabel(sample, small.parent, "W8", "Week8"))
    proc = run_cli("compact", small, "--keep-days", "0", check=0)
    kept = skintrack.open(small).history()["version"].tolist()
    assert held.version in kept and min(kept) == held.version  # older ones went, the held one stayed
    assert held.sql("select count(*) n from analyses")["n"].tolist() == [24]
    on_disk, listed, waiting = _files(small)  # merged files a query of the reader may have listed stay meanwhile
    assert waiting > 0 and on_disk == listed + waiting
    assert f"({waiting} wait for process {os.getpid()}, reading an older version" in proc.stdout
    version = held.version
    del held  # the reader goes away: its version may now expire, and those files be deleted
    proc = run_cli("compact", small, "--keep-days", "0", check=0)
    assert "versions expired: 0" not in proc.stdout
    assert version not in skintrack.open(small).history()["version"].tolist()
    on_disk, listed, waiting = _files(small)
    assert waiting == 0 and on_disk == listed
    now = skintrack.open(small)
    assert now.sql("select count(*) n from analyses where visit = 'Week8'")["n"].tolist() == [24]


def test_a_reader_is_marked_before_it_chooses_its_version_and_stays_marked(small, monkeypatch):
    """Compaction deletes files only no marked reader may read: a reader's mark is there before it picks its
    version, and a compaction that looks between the mark's creation and its lock (and so removes it as a gone
    reader's) does not leave the reader unmarked."""
    real_flock, real_connect, seen = fcntl.flock, store.connect, {}

    def flock(fh, how):
        if how == fcntl.LOCK_SH and "racing" not in seen:
            seen["racing"] = list(versions.held_versions(small).values())  # finds the mark unlocked: removes it
        return real_flock(fh, how)

    def connect(study, *args, **kwargs):
        seen.setdefault("choosing", list(versions.held_versions(small).values()))
        return real_connect(study, *args, **kwargs)

    monkeypatch.setattr(versions.fcntl, "flock", flock)
    monkeypatch.setattr(store, "connect", connect)
    reader = skintrack.open(small)
    assert seen == {"racing": [], "choosing": [0]}  # while it chooses, it holds every version
    assert list(versions.held_versions(small).values()) == [reader.version]


def test_a_study_whose_readers_cannot_be_marked_is_read_all_the_same(small):
    """Without write access to the study folder (a shared read-only copy) a reader is not marked, and reads: its
    version moving on tries the mark again. (`.readers` made a file: root ignores a folder's permissions.)"""
    shutil.rmtree(small / ".readers", ignore_errors=True)
    (small / ".readers").write_text("")
    s = skintrack.open(small)
    assert len(s.timeline("score.water")) > 0
    s._pin(s.version)  # what a refresh to a new version does
    assert len(s.cohort("score.water")) > 0 and versions.held_versions(small) == {}


def test_a_forked_process_marks_its_own_reader_and_leaves_its_parents(small):
    """A study opened before a fork (a pool of worker processes): the child's reader moving on or closing
    neither moves nor removes the parent's mark, which compaction relies on."""
    reader = versions.Reader(small)
    reader.hold(1)
    pid = os.fork()
    if pid == 0:  # the child: its own mark beside the parent's, then gone
        ok = False
        try:
            reader.hold(5)
            ok = sorted(versions.held_versions(small).values()) == [1, 5]
            reader.close()
        finally:
            os._exit(0 if ok else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert list(versions.held_versions(small).values()) == [1]


def test_files_a_compaction_deletes_during_a_check_are_no_damage(small, sample, monkeypatch):
    """`skintrack check` (and the check before each compaction) lists the catalog's files, then reads each: a
    compaction in between that merges them and deletes the originals has damaged nothing."""
    skintrack.ingest([sample / "responses"], small)
    real, compacted = check._listed_files, []

    def listed_then_compacted(con, data_path):
        files = real(con, data_path)
        if not compacted:
            compacted.append("compacting")  # (the compaction's own check lists them as they are)
            compacted[0] = versions.compact_study(small, keep_days=0)
        return files

    monkeypatch.setattr(check, "_listed_files", listed_then_compacted)
    assert check.store_problems(small).empty
    assert compacted[0]["deleted"] > 0  # some of the files it listed were gone when it read them
    (path,) = [p for p in (small / "lake").rglob("*.parquet")][:1]
    path.unlink()  # a file the catalog still lists is damage all the same
    assert check.store_problems(small)["where"].tolist() == [str(path)]


def test_compaction_deletes_an_old_orphan_file_and_keeps_a_young_one(small, run_cli):
    """A Parquet file no version lists is a crashed writer's, once old; a young one may be a writer's in flight
    (a Spark ingest writes its files before it commits them), and stays. DuckLake's filter decides this: its
    filter of old files compares times as text on a SQLite catalog (`versions.delete_unneeded`)."""
    folder = small / "lake" / "main" / "scores"
    listed = next(folder.glob("*.parquet"))
    young, old = folder / "in-flight.parquet", folder / "crashed.parquet"
    for orphan in (young, old):
        shutil.copy(listed, orphan)
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    proc = run_cli("compact", small, "--keep-days", "0", check=0)
    assert young.exists() and not old.exists() and "files deleted: 1" in proc.stdout


def test_small_ingests_are_compacted_by_themselves(tmp_path, sample, monkeypatch):
    monkeypatch.setattr(versions, "SMALL_FILES", 10)
    files = responses(sample / "responses")
    study = tmp_path / "s"
    for f in files[:25]:
        skintrack.ingest([f], study)
    con = store.connect(study)
    assert versions.small_files(con) <= 10
    assert list(versions.history(con)["command"]).count("compact") == 2  # after the 11th and the 22nd
    assert skintrack.open(study).sql("select count(*) n from analyses")["n"].tolist() == [25]


# ---- upgrade -----------------------------------------------------------------------------------------------
def _old_rows(table: str) -> pd.DataFrame:
    files = sorted(glob.glob(str(OLD / "batches" / "*" / f"{table}.parquet")))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True) if files else pd.DataFrame()


@pytest.mark.parametrize("how", ["open", "command"])
def test_a_study_in_the_old_layout_is_converted_with_nothing_lost(tmp_path, run_cli, how):
    study = tmp_path / "old"
    shutil.copytree(OLD, study)
    if how == "command":
        out = run_cli("upgrade", study, check=0).stdout
        assert "14 analyses" in out
    s = skintrack.open(study)
    assert not (study / "batches").exists() and store.is_study(study)
    for table in ("analyses_raw", "scores", "counts", "areas", "severities", "tones", "wrinkles", "detections",
                  "outlines", "side_results", "boxes", "extras", "sources"):
        old = _old_rows("analyses" if table == "analyses_raw" else table)
        new = s.sql(f"select * from {table}")
        assert len(new) == len(old), table
        key = sorted(old.columns)
        pd.testing.assert_frame_equal(new[key].sort_values(key[:3]).reset_index(drop=True).astype(str),
                                      old[key].sort_values(key[:3]).reset_index(drop=True).astype(str), obj=table)
    old_sessions = _old_rows("sessions").sort_values("assigned_at").drop_duplicates("analysis_id", keep="last")
    new_sessions = s.sql("select analysis_id, subject_id, visit, operator from sessions")
    assert sorted(map(tuple, new_sessions.values.tolist())) == \
        sorted(map(tuple, old_sessions[["analysis_id", "subject_id", "visit", "operator"]].values.tolist()))
    assert set(new_sessions["operator"]) == {"op-a", "op-c"}  # the second manifest's re-assignment won
    assert s.sql("select count(*) n from rejects")["n"].tolist() == [1]
    assert len(s.sql("select * from session_index")) == 12
    assert s.cohort("score.water", exclude_flagged=False)["n"].sum() == 12  # nothing lost (S03 W8 is QC-flagged)
    upgrades = s.history().query("command == 'upgrade'")
    assert len(upgrades) == len(list(OLD.glob("batches/*")))  # each old batch is a version, oldest first
    first = skintrack.open(study, version=int(upgrades["version"].iloc[1]))  # before the re-assignment
    assert set(first.sql("select operator from sessions")["operator"]) == {"op-a", "op-b"}


# ---- a team study on PostgreSQL ---------------------------------------------------------------------------------
def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        debian_install("postgresql")
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert found, "PostgreSQL is needed for the team-study test: apt-get install postgresql"
    return Path(found[-1]).parent


@contextlib.contextmanager
def _postgres_server():
    """A real PostgreSQL server on a Unix socket in a temporary folder, run as the `postgres` user (a
    folder of its own under /tmp: pytest's are closed to other users). Yields (connection, stop)."""
    bin_dir, root = _pg_bin(), Path(tempfile.mkdtemp(prefix="skintrack-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    os.chmod(root, 0o777)
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    shutil.chown(sock, "postgres") if os.geteuid() == 0 else None
    subprocess.run(as_pg + [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(as_pg + [str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                            f"-p {port} -k {sock} -c listen_addresses=''", "start"], check=True, capture_output=True)
    subprocess.run(as_pg + [str(bin_dir / "createdb"), "-h", str(sock), "-p", str(port), "skintrack"], check=True)

    def stop():
        subprocess.run(as_pg + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)

    try:
        yield f"postgres:dbname=skintrack host={sock} port={port} user=postgres", stop
    finally:
        stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    with _postgres_server() as (catalog, _):
        yield catalog


def test_several_machines_share_one_study_through_postgresql(postgres, tmp_path, sample, run_cli):
    lake = tmp_path / "shared-data"
    one, two = tmp_path / "machine-1" / "trial", tmp_path / "machine-2" / "trial"
    for folder in (one, two):
        run_cli("share", folder, "--catalog", postgres, "--data-path", lake, check=0)
    assert "password" not in (one / "store.toml").read_text()
    files = responses(sample / "responses")
    exe = str(Path(sys.executable).with_name("skintrack"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i, f in enumerate(files):  # two halves, each only on its own machine
        shutil.copy(f, tmp_path / ("a" if i % 2 else "b") / f.name)
    procs = [subprocess.Popen([exe, "ingest", str(tmp_path / half), "--study", str(folder), "--quiet",
                               "--subjects", str(sample / "subjects.csv")], stderr=subprocess.PIPE, text=True)
             for half, folder in (("a", one), ("b", two))]  # at the same time
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    for folder in (one, two):
        s = skintrack.open(folder)
        assert s.sql("select count(*) n from analyses")["n"].tolist() == [96]
        assert s.sql("select count(*) n from subjects")["n"].tolist() == [24]
    manifest = pd.read_csv(sample / "manifest.csv")
    manifest["file"] = manifest["file"].str.replace("responses/", "")
    manifest.to_csv(tmp_path / "m.csv", index=False)
    run_cli("ingest", tmp_path / "a", "--study", one, "--manifest", tmp_path / "m.csv", "--quiet")
    run_cli("ingest", tmp_path / "b", "--study", two, "--manifest", tmp_path / "m.csv", "--quiet")
    s = skintrack.open(two)
    assert s.cohort("score.water", exclude_flagged=False)["n"].sum() == 96  # every capture, QC-flagged ones too
    assert len(s.sql("select * from session_index")) == 96
    assert {Path(p).parent.name for p in s.sql("select source from sources")["source"]} == {"a", "b"}
    assert not list(one.glob("lake.sqlite")) and (lake / "main").is_dir()  # the catalog is in PostgreSQL
    del s  # (a reader here would keep them waiting for itself)
    proc = run_cli("compact", two, "--keep-days", "0", check=0)  # readers on machine 1 are not marked here:
    waiting = int(re.search(r"\((\d+) wait 60 minutes: readers of this shared study on other machines", proc.stdout)[1])
    _, listed, scheduled = _files(two)
    assert waiting == scheduled > 0 and len(list(lake.rglob("*.parquet"))) == listed + waiting
    with pytest.MonkeyPatch.context() as m:  # an hour later
        m.setattr(versions, "SHARED_GRACE", dt.timedelta(0))
        done = versions.compact_study(one, keep_days=0)
    assert done["deleted"] >= waiting and done["waiting"] == 0 and _files(one)[2] == 0


def test_a_catalog_server_that_goes_away_mid_ingest_is_one_line(tmp_path, sample, run_cli):
    with _postgres_server() as (catalog, stop):
        study = tmp_path / "team"
        run_cli("share", study, "--catalog", catalog, check=0)
        run_cli("ingest", sample / "responses" / "S01_D0.json", "--study", study, "--quiet", check=0)
        exe = str(Path(sys.executable).with_name("skintrack"))
        before = len(list((study / "lake").rglob("*.parquet")))
        proc = subprocess.Popen([exe, "ingest", str(sample / "responses"), "--study", str(study), "--quiet",
                                 "--batch-size", "10", "--commit-every", "10"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        while len(list((study / "lake").rglob("*.parquet"))) == before and proc.poll() is None:
            time.sleep(0.01)  # until the ingest writes its first data files: then the server goes
        stop()
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(study) in err

"""The store under attack: interrupted upgrades, lost and damaged catalogs, missing and truncated data files,
kills in the first second, readers and writers at once, a catalog server that goes away. Nothing is lost,
and every failure is one line with the study and the file, never a traceback."""
from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

import skintrack
from skintrack.tables import extensions, store, upgrade

from conftest import FIXTURES, responses

OLD = FIXTURES / "old-layout-study"
EXE = str(Path(sys.executable).with_name("skintrack"))


def _analyses(study) -> int:
    return int(skintrack.open(study).sql("select count(*) n from analyses")["n"].iloc[0])


def _one_line(proc, code=1):
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.fixture
def old(tmp_path):
    study = tmp_path / "old"
    shutil.copytree(OLD, study)
    return study


@pytest.fixture
def small(tmp_path, sample):
    study = tmp_path / "small"
    skintrack.ingest(responses(sample / "responses", "S0[1-4]_*.json"), study, manifest=sample / "manifest.csv",
                     subjects=sample / "subjects.csv")
    return study


# ---- 1. an interrupted upgrade never loses the converted store -------------------------------------------------
def test_an_upgrade_stopped_after_each_batch_resumes_and_keeps_every_analysis(old, monkeypatch):
    """A crash after each committed batch: every run commits one more batch, then the power goes."""
    batches = len(list((OLD / "batches").iterdir()))
    real = store.transaction
    for run in range(batches):
        commits = {"n": 0}

        def crashing(con, command, info=None):
            if command == "upgrade":
                commits["n"] += 1
                if commits["n"] > 1:
                    raise KeyboardInterrupt("power loss")
            return real(con, command, info)

        monkeypatch.setattr(store, "transaction", crashing)
        if run < batches - 1:
            with pytest.raises(KeyboardInterrupt):
                upgrade.upgrade(old)
            assert (old / "batches").is_dir() and store.is_study(old)
        else:
            upgrade.upgrade(old)
        monkeypatch.setattr(store, "transaction", real)
    assert _analyses(old) == 14 and not (old / "batches").exists()
    upgrades = skintrack.open(old).history().query("command == 'upgrade'")
    assert len(upgrades) == batches  # each batch converted once, never twice


@pytest.mark.parametrize("state", ["batches-partly-deleted", "batches-whole", "rmtree-eacces"])
def test_a_finished_upgrade_whose_cleanup_stopped_keeps_every_analysis(old, state, monkeypatch):
    """The states an interrupted deletion of batches/ leaves (0 of 14 analyses survived them before)."""
    if state == "rmtree-eacces":  # a share that lets us rename but not delete: the folder stays
        real = shutil.rmtree

        def refuse(path, ignore_errors=False, **kw):
            if Path(path).name != upgrade.CONVERTED:
                return real(path, ignore_errors=ignore_errors, **kw)
            if not ignore_errors:
                raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(upgrade.shutil, "rmtree", refuse)
        upgrade.upgrade(old)  # the cleanup failing is no failure of the upgrade
        monkeypatch.undo()
        assert (old / upgrade.CONVERTED).is_dir() and not store.is_old_layout(old)
    else:
        real = upgrade.shutil.rmtree
        monkeypatch.setattr(upgrade.Path, "rename", lambda self, target: (_ for _ in ()).throw(
            KeyboardInterrupt("killed before the rename")))
        with pytest.raises(KeyboardInterrupt):
            upgrade.upgrade(old)
        monkeypatch.undo()
        if state == "batches-partly-deleted":  # what an older skintrack's interrupted rmtree left
            real(sorted((old / "batches").iterdir())[0])
    assert _analyses(old) == 14
    assert not (old / "batches").exists()


def test_upgrade_killed_at_random_moments_never_loses_a_row(old):
    rng = random.Random(4)
    for _ in range(4):
        proc = subprocess.Popen([EXE, "upgrade", str(old)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _analyses(old) == 14 and not (old / "batches").exists()


def test_ingest_into_an_old_study_upgrades_it_without_locking_itself_out(old, run_cli):
    proc = run_cli("ingest", FIXTURES / "real" / "ailabtools-docs-case1" / "response-v1.7.json", "--study", old)
    assert proc.returncode == 0 and "ingested 1 new analyses" in proc.stdout, proc.stderr
    assert _analyses(old) == 15


# ---- 2. a lost or empty catalog is refused, never replaced --------------------------------------------------
@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_catalog_is_refused_by_every_command_and_nothing_is_written(small, sample, how, run_cli):
    files = sorted(str(p) for p in (small / "lake").rglob("*.parquet"))
    (small / "lake.sqlite").unlink()
    if how == "emptied":
        (small / "lake.sqlite").write_bytes(b"")
    for args in (("trends", small, "score.water"), ("check", small), ("compact", small, "--keep-days", "0"),
                 ("ingest", sample / "responses", "--study", small), ("history", small), ("report", small,
                                                                                          "--out", small / "r")):
        proc = run_cli(*args)
        said = proc.stdout if args[0] == "check" else proc.stderr  # check lists what it finds on stdout
        assert proc.returncode == 1 and "Traceback" not in proc.stderr and len(said.strip().splitlines()) == 1, args
        assert "lake.sqlite" in said and "Restore lake.sqlite from a backup" in said, args
    assert sorted(str(p) for p in (small / "lake").rglob("*.parquet")) == files  # no new catalog, no file lost
    if how == "emptied":
        assert (small / "lake.sqlite").stat().st_size == 0
    else:
        assert not (small / "lake.sqlite").exists()


# ---- 4. a kill in the first second ----------------------------------------------------------------------------
def test_a_catalog_without_tables_is_an_empty_study_and_the_next_ingest_finishes_it(tmp_path, sample, run_cli):
    study = tmp_path / "s"
    study.mkdir()
    con = duckdb.connect()
    extensions.load(con, "sqlite_scanner")
    extensions.load(con, "ducklake")
    con.execute(f"ATTACH 'ducklake:sqlite:{study / 'lake.sqlite'}' AS lake (DATA_PATH '{study / 'lake'}/')")
    con.close()  # DuckLake's own tables exist; the study's were never made
    for args in (("trends", study, "score.water", "--view", "timeline"), ("check", study), ("history", study),
                 ("endpoints", study)):
        proc = run_cli(*args)
        assert "Traceback" not in proc.stderr and "CatalogException" not in proc.stderr, (args, proc.stderr)
    assert skintrack.open(study).sql("select count(*) n from analyses")["n"].tolist() == [0]
    run_cli("ingest", sample / "responses", "--study", study, "--quiet", check=0)
    assert _analyses(study) == 96


def test_killing_the_first_ingest_early_leaves_a_study_every_command_reads(tmp_path, sample, run_cli):
    for delay in (0.4, 0.8, 1.2):
        study = tmp_path / f"s{delay}"
        proc = subprocess.Popen([EXE, "ingest", str(sample / "responses"), "--study", str(study), "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for args in (("trends", study, "score.water", "--view", "timeline"), ("check", study)):
            out = run_cli(*args)
            assert "Traceback" not in out.stderr, (delay, args, out.stderr)
        run_cli("ingest", sample / "responses", "--study", study, "--quiet", check=0)
        assert _analyses(study) == 96


# ---- 5. a damaged store is one line, and check names every damaged file ---------------------------------------
def test_random_bytes_in_the_catalog_are_one_line_everywhere(small, sample, run_cli):
    (small / "lake.sqlite").write_bytes(os.urandom(4096))
    for args in (("trends", small, "score.water"), ("ingest", sample / "responses", "--study", small),
                 ("compact", small), ("check", small)):
        proc = run_cli(*args)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert "lake.sqlite" in proc.stdout + proc.stderr, args


@pytest.mark.parametrize("damage", ["deleted", "truncated", "every-file-deleted"])
def test_a_damaged_data_file_is_named_by_every_command_and_listed_by_check(small, sample, damage, run_cli):
    files = sorted((small / "lake" / "main" / "scores").glob("*.parquet"))
    victims = sorted((small / "lake").rglob("*.parquet")) if damage == "every-file-deleted" else files[:1]
    for f in victims:
        if damage == "truncated":
            f.write_bytes(f.read_bytes()[:100])
        else:
            f.unlink()
    for args in (("trends", small, "score.water"), ("report", small, "--out", small / "r", "--no-pdf"),
                 ("compact", small)):
        proc = run_cli(*args)
        _one_line(proc)
        assert str(small) in proc.stderr, (args, proc.stderr)
    proc = run_cli("check", small, "--csv")
    assert proc.returncode == 1
    for f in victims:
        assert str(f) in proc.stdout
    assert ("truncated" in proc.stdout) == (damage == "truncated")
    assert skintrack.open(small).check()["where"].tolist() == sorted(map(str, victims))


# ---- 6. readers and writers at once ----------------------------------------------------------------------------
def test_readers_never_fail_while_a_writer_commits_and_compaction_waits_for_them(small, sample, run_cli):
    errors, stop = [], threading.Event()

    def read():
        s = skintrack.open(small)
        for i in itertools.count():  # a new query each time: a study keeps the results of one it has run
            if stop.is_set():
                break
            try:
                s.sql("select count(*) from metrics where value > ?", [-i])
                s.timeline("score.water")
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                errors.append(f"{type(e).__name__}: {e}")

    readers = [threading.Thread(target=read) for _ in range(4)]
    for r in readers:
        r.start()
    try:
        for f in responses(sample / "responses", "S1*_*.json")[:4]:  # 4 commits, one file each
            run_cli("ingest", f, "--study", small, "--quiet", check=0)
        run_cli("compact", small, "--keep-days", "0", check=0)
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert errors == []
    assert _analyses(small) == 20


# ---- 7. a plan of the wrong type ---------------------------------------------------------------------------
@pytest.mark.parametrize("line, said", [
    ('visits = "D0"', "`visits` must be a list of tables"), ("alpha = \"0.05\"", "`alpha` must be a number"),
    ('treatments = "active"', "`treatments` must be a list of arm names"),
    ('primary = "score.water@W12"', "`primary` must be a table"),
    ('visits = [{label = "D0", day = "zero"}]', "`visits[0].day` must be a number"),
    ('visits = [{label = "D0", day = 0, window = nan}]', "`visits[0].window` must be a number, not the non-finite "
                                                         "number nan"),  # TOML has nan and inf
    ('visits = [{label = "D0", day = 0}, {label = "W4", day = "28"}]', "`visits[1].day` must be a number, not the "
                                                                       "text '28'"),  # the place of a later entry
    ('responders = {"score.water" = inf}', '`responders.score.water` must be a number or "mdc", not the non-finite '
                                           "number inf")])
def test_a_plan_field_of_the_wrong_type_names_the_field_and_the_type(small, line, said, run_cli):
    (small / "plan.toml").write_text(line + "\n")
    proc = run_cli("plan", small)
    _one_line(proc, 2)
    assert said in proc.stderr and "plan.toml" in proc.stderr

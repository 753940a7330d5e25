"""Outputs kept per study version (`skintrack.kept`): a command answered again prints and writes exactly what
computing it prints and writes, and anything it reads that changes makes it compute again."""
from __future__ import annotations

import datetime
import hashlib
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from skintrack import cli, kept
from skintrack import open as skintrack_open
from skintrack.demo import demo_study
from skintrack.tables import store
from skintrack.tables.layout import CONFIG, DATA, PLAN

KEPT_NOTE = "the output kept for this study version"


@pytest.fixture
def study(tmp_path, monkeypatch):
    """A copy of the demo study, with a cache of its own."""
    monkeypatch.setenv("SKINTRACK_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "trial"
    shutil.copytree(demo_study().path, folder)
    assert skintrack_open(folder).plan  # its plan kept as a version (the first command would do it, not keeping)
    return folder


def skintrack(*args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def entries(tmp_path) -> list:
    return [e for e in (tmp_path / "cache").glob("*/*") if not e.name.startswith(".")]


def test_answered_again_exactly_and_fresh_computes(study, tmp_path):
    first = skintrack("endpoints", study, "--json")
    assert KEPT_NOTE not in first.stderr and len(entries(tmp_path)) == 1
    again = skintrack("endpoints", study, "--json")
    assert again.stdout == first.stdout and KEPT_NOTE in again.stderr
    fresh = skintrack("endpoints", study, "--json", "--fresh")
    assert fresh.stdout == first.stdout and KEPT_NOTE not in fresh.stderr
    table = skintrack("endpoints", study)  # other options: another entry
    assert KEPT_NOTE not in table.stderr and table.stdout != first.stdout and len(entries(tmp_path)) == 2


@pytest.mark.parametrize("change", ["plan edited", "new version", "data file touched", "code changed", "other day"])
def test_whatever_it_reads_changes_it_computes_again(study, tmp_path, monkeypatch, change):
    skintrack("endpoints", study, "--csv")
    if change == "plan edited":
        plan = study / PLAN
        plan.write_text(plan.read_text().replace('"W12" }', '"W8" }', 1))  # the first secondary endpoint at W8
    elif change == "new version":  # the same plan kept again: a version of its own, the same rows
        before = kept._snapshot(study, None)
        with store.locked(study):
            con = store.connect(study, write=True)
            store.save_plan(con, (study / PLAN).read_text())
            con.close()
        assert kept._snapshot(study, None)[0] > before[0]
    elif change == "data file touched":
        data = next(p for p in (study / DATA).rglob("*.parquet"))
        os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 10**9))
    elif change == "code changed":
        monkeypatch.setattr(kept, "code_fingerprint", lambda: "another skintrack")
    else:  # the report prints its date: kept for one day
        options = {"study": str(study)}
        dated = kept.key("report", options, study, dated=True)
        monkeypatch.setattr(kept, "dt", SimpleNamespace(date=SimpleNamespace(today=lambda: datetime.date(2100, 1, 1))))
        assert kept.key("report", options, study, dated=True) != dated
        assert kept.key("report", options, study) == kept.key("report", options, study)
        return
    after = skintrack("endpoints", study, "--csv")
    assert KEPT_NOTE not in after.stderr
    monkeypatch.setenv("SKINTRACK_CACHE", "off")
    assert skintrack("endpoints", study, "--csv").stdout == after.stdout  # what computing it prints
    if change == "plan edited":
        assert ",W8," in after.stdout


def test_nothing_kept_when_a_version_is_committed_during_the_run(study, tmp_path, monkeypatch):
    from skintrack.analysis.study import Study

    computed = Study.endpoints

    def endpoints_then_edit(self, *args, **kwargs):
        out = computed(self, *args, **kwargs)
        (study / PLAN).write_text((study / PLAN).read_text() + "\n# edited meanwhile\n")
        return out

    monkeypatch.setattr(Study, "endpoints", endpoints_then_edit)
    skintrack("endpoints", study)
    assert entries(tmp_path) == []


def test_an_unreadable_entry_is_computed_again(study, tmp_path):
    first = skintrack("sensitivity", study, "--csv", "--methods", "qc")
    (entry,) = entries(tmp_path)
    (entry / kept.STDOUT).write_bytes(b"\xff\xfe not text")
    again = skintrack("sensitivity", study, "--csv", "--methods", "qc")
    assert KEPT_NOTE not in again.stderr and again.stdout == first.stdout


def test_report_files_come_back_identical(study, tmp_path):
    out = tmp_path / "report"
    first = skintrack("report", study, "--out", out, "--no-pdf", "--metrics", "score.water")
    written = {p.relative_to(out): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()}
    assert {"report.html", "report.docx"} <= {str(p) for p in written}
    shutil.rmtree(out)
    again = skintrack("report", study, "--out", out, "--no-pdf", "--metrics", "score.water")
    assert KEPT_NOTE in again.stderr and again.stdout == first.stdout
    assert {p.relative_to(out): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in out.rglob("*") if p.is_file()} == written
    fresh = tmp_path / "fresh"
    skintrack("report", study, "--out", fresh, "--no-pdf", "--metrics", "score.water", "--fresh")
    assert (fresh / "report.html").read_bytes() == (out / "report.html").read_bytes()  # what computing it writes


def test_never_kept_off_or_for_a_shared_catalog(study, tmp_path, monkeypatch):
    (study / CONFIG).write_text("# a shared catalog's address\n")
    assert kept.key("endpoints", {}, study) is None
    (study / CONFIG).unlink()
    assert kept.key("endpoints", {}, study) is not None
    monkeypatch.setenv("SKINTRACK_CACHE", "off")
    assert kept.key("endpoints", {}, study) is None
    assert kept.key("endpoints", {}, tmp_path / "nothing here") is None


def test_least_recently_used_go_above_the_limit(study, tmp_path, monkeypatch):
    for i in range(3):
        kept.keep(kept.key("endpoints", {"i": i}, study), "x" * 1000)
    assert len(entries(tmp_path)) == 3
    monkeypatch.setattr(kept, "LIMIT_BYTES", 2500)
    newest = kept.key("endpoints", {"i": 3}, study)
    kept.keep(newest, "x" * 1000)
    assert len(entries(tmp_path)) == 2 and kept.replay(newest) == "x" * 1000


def test_an_unwritable_cache_costs_only_time(study, tmp_path):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    first, again = skintrack("endpoints", study, "--csv"), skintrack("endpoints", study, "--csv")
    assert first.stdout and again.stdout == first.stdout and KEPT_NOTE not in again.stderr
    assert Path(tmp_path / "cache").is_file()


class _Spy:
    """A study's connection that notes each statement it runs."""

    def __init__(self, con):
        self._con, self.ran = con, []

    def __getattr__(self, name):
        return getattr(self._con, name)

    def execute(self, query, *args):
        self.ran.append(query)
        return self._con.execute(query, *args)


def test_a_large_studys_records_are_read_back_by_the_next_process(study, tmp_path, monkeypatch):
    """A large study keeps each metric's records in the user's cache (`Study._make_records`); a new Study at
    the same version reads them instead of computing them, and every helper gives exactly the same frame.
    An unreadable kept file is computed again; a small study, or the cache turned off, keeps nothing."""
    import pandas as pd

    from skintrack.analysis import study as study_module

    def helpers(s):
        ch = s.change_from_baseline("score.water")
        return [ch, pd.DataFrame(ch.attrs["excluded"]), s.timeline("score.water", exclude_flagged=False),
                s.slopes("score.water"), s.cohort("score.rough"), s.responders("score.water", 2.0),
                s.mmrm("score.water").diffs]

    def records_files():
        return sorted((tmp_path / "cache").rglob(study_module.RECORDS_FILE))

    helpers(skintrack_open(study))
    assert records_files() == []  # the demo is small: computing is cheaper than keeping
    monkeypatch.setattr(study_module, "KEEP_RECORDS_LAKE_BYTES", 0)  # the demo as if it were large
    computed = helpers(skintrack_open(study))
    assert len(records_files()) == 3  # score.water with and without QC exclusion, score.rough
    again = skintrack_open(study)
    again.con = spy = _Spy(again.con)
    for got, want in zip(helpers(again), computed):
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert not any(q.startswith("CREATE TEMP TABLE kept_records") for q in spy.ran)  # none computed
    damage = records_files()[0].with_name("damage")  # damaged (replaced: the cache never writes a file in place)
    damage.write_bytes(b"not parquet")
    os.replace(damage, records_files()[0])  # computed again, the same
    damaged = skintrack_open(study)
    damaged.con = spy = _Spy(damaged.con)
    for got, want in zip(helpers(damaged), computed):
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert sum(q.startswith("CREATE TEMP TABLE kept_records") for q in spy.ran) == 1
    for entry in {f.parents[1] for f in records_files()}:  # the cache prunes its entries: a study reads on
        shutil.rmtree(entry)
    again._results.clear(), again._fits.clear()  # no result held in memory: every helper reads the records
    for got, want in zip(helpers(again), computed):
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    monkeypatch.setenv("SKINTRACK_CACHE", "off")
    shutil.rmtree(tmp_path / "cache")
    helpers(skintrack_open(study))
    assert not (tmp_path / "cache").exists()


def test_a_large_study_that_keeps_nothing_makes_a_table_of_the_records_asked_for_again(study, monkeypatch):
    """With the cache off (or a shared catalog), a large study's helper called once reads its metric's records
    in its own query; asked for again, the records become a table that every later query reads.
    `change_from_baseline` reads them once, and then only the records of the subjects it leaves out, to say
    why. The frames are the same either way."""
    import pandas as pd

    from skintrack.analysis import study as study_module

    monkeypatch.setattr(study_module, "KEEP_RECORDS_LAKE_BYTES", 0)
    monkeypatch.setenv("SKINTRACK_CACHE", "off")
    s = skintrack_open(study)
    s.con = spy = _Spy(s.con)

    def tables_made():
        return sum(q.startswith("CREATE TEMP TABLE kept_records") for q in spy.ran)

    def computed_in_query():
        return sum("/* records */" in q for q in spy.ran)

    once = s.slopes("score.water")
    assert tables_made() == 0 and computed_in_query() == 1
    s._results.clear()
    pd.testing.assert_frame_equal(s.slopes("score.water"), once, check_exact=True)
    assert tables_made() == 1 and computed_in_query() == 1  # a table's statement has the CTEs, not the comment
    s._results.clear()
    s.cohort("score.water")
    change = s.change_from_baseline("score.water", baseline="W4")
    assert tables_made() == 1 and computed_in_query() == 1  # read from the table
    assert change.attrs["excluded"]  # a subject left out (W4 flagged by QC): its records read from the table too
    change = s.change_from_baseline("score.rough", baseline="W4")
    assert tables_made() == 1 and computed_in_query() == 3  # the changes, then the subjects left out
    fresh = skintrack_open(study)
    monkeypatch.setattr(study_module, "KEEP_RECORDS_LAKE_BYTES", 1 << 60)  # small: a table at the first ask
    pd.testing.assert_frame_equal(fresh.change_from_baseline("score.rough", baseline="W4"), change, check_exact=True)
    assert fresh.change_from_baseline("score.rough", baseline="W4").attrs == change.attrs

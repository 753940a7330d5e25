"""The lake's integer keys (`skintrack.tables.keys`): every writer gives each row its analysis's key, the lake
refuses a row without one, the records read over the keys are the records read over the ids, an older study
gains its keys in an upgrade, and two analyses that share a key never share a value."""
from __future__ import annotations

import dataclasses
import shutil

import duckdb
import pandas as pd
import pytest

import skintrack
from skintrack.analysis.selection import records_sql
from skintrack.tables import keys, store
from skintrack.tables.ingest import content_id

METRICS = ["score.water", "count.blackhead.nose", "area.water.whole_face", "severity.pores.chin", "tone.ita",
           "wrinkle.forehead.score", "skin.age", "measure.corneometer", "measure.feels_hydrated"]


@pytest.fixture
def study(tmp_path):
    from skintrack.demo import demo_study

    folder = tmp_path / "s"
    shutil.copytree(demo_study().path, folder)
    return folder


def _records(s, keyed=None):
    """Every metric's records at `s`'s rules (read over the keys or the ids, as `keyed` says)."""
    r = s.rules() if keyed is None else dataclasses.replace(s.rules(), keyed=keyed)
    out = []
    for key in METRICS:
        sql, params = records_sql(key, r)
        out.append(s.sql(f"WITH {sql} SELECT * FROM recs ORDER BY analysis_id", params))
    return out


def _keys_are_their_ids(s) -> int:
    rows = 0
    for table in keys.KEYED:
        got = s.sql(f"SELECT DISTINCT analysis_id, analysis_key FROM {table}")
        assert got["analysis_key"].tolist() == [keys.key_of(a) for a in got["analysis_id"]], table
        rows += len(got)
    return rows


def _assert_same_records(s, want) -> None:
    for got, expected in zip(_records(s), want, strict=True):
        pd.testing.assert_frame_equal(got, expected, check_exact=True)


def _write(study, what: str, *statements: str) -> None:
    """Run `statements` on the lake as one version, as another writer would."""
    con = store.connect(study, write=True)
    with store.transaction(con, f"test: {what}"):
        for sql in statements:
            con.execute(sql)
    con.close()


def test_the_sql_key_is_the_python_key():
    ids = ["0123456789abcdef0123456789abcdef", "m-" + "f" * 30, "ünïcødé", "", "x" * 300]
    con = duckdb.connect()
    got = [con.execute(f"SELECT {keys.KEY_SQL.format(id='?')}", [a]).fetchall()[0][0] for a in ids]
    assert got == [keys.key_of(a) for a in ids]
    assert all(0 <= k < 2**63 for k in got)


def test_every_keyed_row_has_its_analysis_key_and_a_row_without_one_is_refused(study):
    s = skintrack.open(study)
    assert s.keyed and _keys_are_their_ids(s) > 200
    con = store.connect(study, write=True)
    with pytest.raises(duckdb.ConstraintException, match="NOT NULL"):  # what an older skintrack would write
        con.execute(f"INSERT INTO {store.LAKE}.main.scores (analysis_id, metric, value) VALUES ('a', 'water', 1)")
    con.close()
    _assert_same_records(s, _records(s, keyed=False))


def test_an_older_study_gains_its_keys_in_an_upgrade_and_reads_the_same_records(study):
    before = _records(skintrack.open(study))
    _write(study, "a study without keys", f"DROP TABLE {store.LAKE}.main.key_collisions",
           *[f"ALTER TABLE {store.LAKE}.main.{table} DROP COLUMN {keys.KEY}" for table in keys.KEYED])
    old = skintrack.open(study)
    assert not old.keyed
    _assert_same_records(old, before)
    store.connect(study, write=True).close()  # a writer makes the table of shared keys, adds the keys, computes them
    new = skintrack.open(study)
    assert new.history()["command"].tolist()[-2:] == ["create", "upgrade"] and new.version == old.version + 2
    assert new.keyed and _keys_are_their_ids(new) > 200
    _assert_same_records(new, before)
    assert not skintrack.open(study, version=old.version).keyed  # the older version reads as it did
    store.connect(study, write=True).close()
    assert skintrack.open(study).version == new.version  # once
    # an older skintrack's write: the upgraded column takes a row without its key, and the study joins on ids again
    _write(study, "an older writer", f"INSERT INTO {store.LAKE}.main.scores (analysis_id, metric, value) "
                                     "VALUES ('a', 'water', 1)")
    later = skintrack.open(study)
    assert not later.keyed
    _assert_same_records(later, before)


def test_two_analyses_sharing_a_key_are_recorded_and_the_records_join_on_ids(tmp_path, sample, monkeypatch):
    """Force S01's and S02's D0 analyses to one key: the ingest records the pair, the study reads its records
    over the ids, and each subject keeps its own value."""
    m = pd.read_csv(sample / "manifest.csv")
    pair = {keys.key_of(content_id((sample / f).read_bytes()))
            for f in m.loc[m["visit"].eq("D0") & m["subject_id"].isin(["S01", "S02"]), "file"]}
    real = keys.key_of
    monkeypatch.setattr(keys, "key_of", lambda a: min(pair) if real(a) in pair else real(a))
    folder = tmp_path / "s"
    skintrack.ingest([sample / "responses"], folder, manifest=sample / "manifest.csv", subjects=sample / "subjects.csv",
                     measures=sample / "measures.csv", measures_catalog=sample / "measures.toml")
    monkeypatch.setattr(keys, "key_of", real)
    s = skintrack.open(folder)
    shared = s.sql("SELECT * FROM key_collisions")
    assert len(shared) == 2 and shared["analysis_key"].nunique() == 1 and not s.keyed
    assert s.sql("SELECT count(DISTINCT analysis_id) AS n FROM session_index WHERE analysis_key = ?",
                 [min(pair)])["n"][0] == 2
    tl = s.timeline("score.water", exclude_flagged=False)
    own = s.sql("SELECT subject_id, value FROM analyses JOIN scores USING (analysis_id) WHERE metric = 'water' "
                "AND visit = 'D0' AND subject_id IN ('S01', 'S02') ORDER BY subject_id")
    assert tl[tl["visit"].eq("D0") & tl["subject_id"].isin(["S01", "S02"])][["subject_id", "value"]] \
        .reset_index(drop=True).equals(own)
    counts = []
    for r in (s.rules(), dataclasses.replace(s.rules(), keyed=True)):  # the keys alone would join S01 to S02
        sql, params = records_sql("score.water", r)
        counts.append(s.sql(f"WITH {sql} SELECT count(*) AS n FROM recs", params)["n"][0])
    assert counts[1] == counts[0] + 2

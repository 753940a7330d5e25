"""The plan's rules choose each subject's value: visit windows (exclude, nearest, nominal), intercurrent events
(rescue product use, discontinuation) by the estimand's strategy, and capture QC against the plan's baseline
visit; every output counts what they leave out."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

import skintrack
from skintrack.analysis import qc


@pytest.fixture
def study(tmp_path, sample):
    """The sample trial with S01's W8 taken at day 30 (in W4's window), S02's W8 at day 45 (in no window),
    S03 rescued from W8 on, S04 off treatment after W4, and S05 photographed at screening with glasses."""
    m = pd.read_csv(sample / "manifest.csv")
    day0 = m[m["visit"] == "D0"].set_index("subject_id")["taken_at"].map(pd.Timestamp)
    for sid, visit, day in (("S01", "W8", 30), ("S02", "W8", 45)):
        row = (m["subject_id"] == sid) & (m["visit"] == visit)
        m.loc[row, "taken_at"] = (day0[sid] + pd.Timedelta(days=day)).isoformat()
    m["rescue"] = ""
    m.loc[(m["subject_id"] == "S03") & m["visit"].isin(["W8", "W12"]), "rescue"] = "yes"
    m.to_csv(tmp_path / "m.csv", index=False)
    subjects = pd.read_csv(sample / "subjects.csv")
    subjects["discontinued_after"] = ["W4" if s == "S04" else "" for s in subjects["subject_id"]]
    subjects.to_csv(tmp_path / "subjects.csv", index=False)
    s = tmp_path / "s"
    skintrack.ingest([sample / "responses"], s, manifest=tmp_path / "m.csv", subjects=tmp_path / "subjects.csv")
    shutil.copy(sample / "plan.toml", s / "plan.toml")
    return s


def _plan(study, **changes):
    text = (study / "plan.toml").read_text()
    for key, value in changes.items():
        if f"{key} = " in text:
            text = "\n".join(f'{key} = "{value}"' if line.startswith(f"{key} = ") else line for line in text.splitlines())
        else:
            text = f'{key} = "{value}"\n' + text
    (study / "plan.toml").write_text(text + "\n")
    return skintrack.open(study)


def _values(s, sid):
    tl = s.timeline("score.water", exclude_flagged=False)
    return tl[tl["subject_id"] == sid]["visit"].tolist()


def test_exclude_leaves_out_what_is_outside_its_window_and_check_says_so(study):
    s = _plan(study, windows="exclude")
    assert _values(s, "S01") == ["D0", "W4", "W12"] and _values(s, "S02") == ["D0", "W4", "W12"]
    problems = s.check()
    assert [p.split(":")[0] for p in problems["problem"]] == ["S01 W8", "S02 W8"]
    assert all("left out of the analyses" in p for p in problems["problem"])
    ch = s.change_from_baseline("score.water")
    assert not ((ch["subject_id"] == "S01") & (ch["visit"] == "W8")).any()


def test_nearest_maps_a_capture_to_the_window_that_holds_it(study):
    s = _plan(study, windows="nearest")
    # S01's W8 (day 30) falls in W4's window, but S01's own W4 (day ~28) is nearer W4's target: it stays; the
    # day-30 capture is not used. S02's W8 (day 45) is in no window: left out.
    assert _values(s, "S01") == ["D0", "W4", "W12"] and _values(s, "S02") == ["D0", "W4", "W12"]
    from skintrack.analysis.selection import records_sql

    sql, params = records_sql("score.water", s.rules())
    recs = s.sql(f"WITH {sql} SELECT * FROM recs WHERE subject_id IN ('S01', 'S02') AND visit = 'W8'", params)
    reasons = dict(zip(recs["subject_id"], recs["reason"]))
    assert recs.set_index("subject_id").loc["S01", "avisit"] == "W4"
    assert reasons["S01"] == "another capture of this visit is used" and reasons["S02"] == "in no visit window (day 45)"


def test_nominal_takes_the_labels_as_they_are_and_check_still_lists(study):
    s = _plan(study, windows="nominal")
    assert _values(s, "S01") == ["D0", "W4", "W8", "W12"]
    assert any("analysed at its visit all the same" in p for p in s.check()["problem"])


@pytest.mark.parametrize("strategy, kept", [("hypothetical", ["D0", "W4"]), ("treatment_policy",
                                                                            ["D0", "W4", "W8", "W12"])])
def test_rescue_product_use_follows_the_estimands_strategy(study, strategy, kept):
    text = (study / "plan.toml").read_text().replace('rescue = "hypothetical"', f'rescue = "{strategy}"')
    (study / "plan.toml").write_text(text)
    s = skintrack.open(study)
    assert _values(s, "S03") == kept


@pytest.mark.parametrize("strategy, kept", [("hypothetical", ["D0", "W4"]), ("treatment_policy",
                                                                            ["D0", "W4", "W8", "W12"])])
def test_discontinuation_follows_the_estimands_strategy(study, strategy, kept):
    text = (study / "plan.toml").read_text().replace('discontinuation = "treatment_policy"',
                                                     f'discontinuation = "{strategy}"')
    (study / "plan.toml").write_text(text)
    s = skintrack.open(study)
    assert _values(s, "S04") == kept
    fit = s.mmrm("score.water")
    assert fit.n_obs == len(s.change_from_baseline("score.water").query("not is_baseline"))


def test_capture_qc_compares_with_the_plans_baseline_visit(tmp_path, sample):
    """A screening photo with glasses taken before D0 is no reference: D0 and later are compared with D0."""
    import orjson

    (tmp_path / "in").mkdir()
    for name in ("S05_D0", "S05_W4"):
        shutil.copy(sample / "responses" / f"{name}.json", tmp_path / "in" / f"{name}.json")
    doc = orjson.loads((sample / "responses" / "S05_D0.json").read_bytes())
    doc["result"]["image_quality"]["glasses"] = 1
    doc["request_id"] = "screening"
    (tmp_path / "in" / "S05_SCR.json").write_bytes(orjson.dumps(doc))
    (tmp_path / "m.csv").write_text("file,subject_id,visit,taken_at\nS05_SCR.json,S05,SCR,2024-01-01\n"
                                    "S05_D0.json,S05,D0,2024-01-08\nS05_W4.json,S05,W4,2024-02-05\n")
    skintrack.ingest([tmp_path / "in"], tmp_path / "s", manifest=tmp_path / "m.csv")
    (tmp_path / "s" / "plan.toml").write_text('baseline = "D0"\nvisits = [{label = "SCR"}, {label = "D0"}, '
                                              '{label = "W4"}]\n')
    q = skintrack.open(tmp_path / "s").qc().set_index("visit")
    assert not q.loc["D0", "glasses_changed"] and not q.loc["W4", "glasses_changed"]
    assert q.loc["SCR", "glasses_changed"]  # the screening photo is the one unlike the baseline


def test_the_qc_reference_read_without_grouping_is_the_grouped_one_where_no_visit_holds_two(study):
    """Where no visit holds two photo captures, a subject's one capture at the baseline is its reference: the
    reference is then read without grouping (`qc.reference_sql`), and gives the same rows."""
    s = skintrack.open(study)
    assert not s.several_captures
    grouped, single = (s.sql(f"WITH {sql} SELECT * FROM qc_reference ORDER BY ref_subject", {"qc_baseline": "D0"})
                       for sql in (qc.REFERENCE_SQL, qc.ONE_CAPTURE_REFERENCE_SQL))
    assert len(grouped) == 24  # every subject has its D0
    pd.testing.assert_frame_equal(grouped, single)
    assert qc.reference_sql(False, "D0") == qc.ONE_CAPTURE_REFERENCE_SQL
    assert qc.reference_sql(True, "D0") == qc.reference_sql(False, None) == qc.REFERENCE_SQL  # else grouped


@pytest.mark.parametrize("windows", ["exclude", "nearest", "nominal"])
def test_records_kept_per_version_are_the_records_the_sql_computes(study, windows):
    """A study computes each metric's records once per version and rules (`Study._from_kept_records`); every
    helper reads from them exactly what the records' own SQL gives, and a new version computes them again."""
    s = _plan(study, windows=windows, rescue="hypothetical", discontinuation="hypothetical")
    computed = skintrack.open(study)
    computed._from_kept_records = lambda query, params, make=True: (query, params)

    def helpers(x):
        ch = x.change_from_baseline("score.water")
        return [x.timeline("score.water", exclude_flagged=False), x.timeline("score.rough"), ch,
                pd.DataFrame(ch.attrs["excluded"]), x.slopes("score.water"), x.cohort("score.rough"),
                x.responders("score.water", 2.0), x.mmrm("score.water").diffs]

    for kept, own in zip(helpers(s), helpers(computed)):  # sums may add the same rows in another order
        pd.testing.assert_frame_equal(kept, own, check_exact=False, rtol=1e-12, atol=0)
    from skintrack.analysis.selection import records_sql

    for key, r in (("score.water", s.rules(exclude_flagged=False)), ("score.rough", s.rules())):
        sql, params = records_sql(key, r)
        query = f"WITH {sql} SELECT * FROM recs ORDER BY analysis_id"
        recs = s.sql(query, params)
        pd.testing.assert_frame_equal(recs, computed.sql(query, params), check_exact=True)
        assert recs["reason"].notna().any() and (recs["used"] == recs["reason"].isna()).all()  # each rule says why
    tables = set(s._records.values())
    assert len(tables) == 3  # score.water with and without QC exclusion, score.rough
    _plan(study, windows="nominal" if windows != "nominal" else "exclude")  # a new version
    s.timeline("score.water")
    assert not tables & set(s._records.values())
    left = s.con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    assert not tables & {name for (name,) in left}  # the earlier version's tables are gone


def test_a_session_index_without_the_capture_columns_gives_the_same_qc_at_every_version(tmp_path):
    """The session index keeps each capture's QC columns (so a metric's records join nothing else). A study
    written before it did: its versions read the columns from analyses and tones instead, and the first writer
    rebuilds its index once; every version's flags and records are the same."""
    from skintrack.analysis.selection import records_sql
    from skintrack.demo import demo_study
    from skintrack.tables import store
    from skintrack.tables.schema import CAPTURE

    study = tmp_path / "s"
    shutil.copytree(demo_study().path, study)

    def state(s):
        sql, params = records_sql("score.water", s.rules())
        recs = s.sql(f"WITH {sql} SELECT analysis_id, reason FROM recs ORDER BY analysis_id", params)
        return s.qc().drop(columns="ingested_at", errors="ignore"), recs

    qc, recs = state(skintrack.open(study))
    assert qc["flagged"].sum() >= 3 and recs["reason"].str.startswith("excluded by capture QC").sum() >= 3
    con = store.connect(study, write=True)  # what a study written before the index kept the columns looks like
    with store.transaction(con, "test: an older session index"):
        for column in ["kind", *CAPTURE]:
            con.execute(f"ALTER TABLE {store.LAKE}.main.session_index DROP COLUMN {column}")
    con.close()
    old = skintrack.open(study)
    assert "yaw" not in store.columns_at(old.con, old.version)["session_index"]
    for s in (old, skintrack.open(study, version=old.version - 1)):
        got_qc, got_recs = state(s)
        pd.testing.assert_frame_equal(got_qc, qc)
        pd.testing.assert_frame_equal(got_recs, recs)
    store.connect(study, write=True).close()  # a writer rebuilds the index, in one version
    new = skintrack.open(study)
    assert new.history()["command"].iloc[-1] == "upgrade" and new.version == old.version + 1
    assert "yaw" in store.columns_at(new.con, new.version)["session_index"]
    got_qc, got_recs = state(new)
    pd.testing.assert_frame_equal(got_qc, qc)
    pd.testing.assert_frame_equal(got_recs, recs)
    store.connect(study, write=True).close()
    assert skintrack.open(study).version == new.version  # once


@pytest.mark.parametrize("windows", ["exclude", "nearest", "nominal"])
def test_the_subjects_left_out_of_changes_are_those_the_records_leave_without_a_baseline(study, windows):
    """`change_from_baseline(...).attrs["excluded"]`, checked against its definition in pandas over the records:
    the subjects with a used record but none at the baseline analysis visit, and why (no session at the
    baseline visit, no value of the metric there, or the first reason its records there were left out)."""
    from skintrack.analysis.selection import records_sql

    s = _plan(study, windows=windows, rescue="hypothetical", discontinuation="hypothetical")
    index = s.sql("SELECT subject_id, visit FROM session_index")
    seen = 0
    for baseline in s.visits:
        for key in ("score.water", "severity.sensitivity", "skin.age"):
            r = s.rules(baseline=baseline)
            sql, params = records_sql(key, r)
            recs = s.sql(f"WITH {sql} SELECT * FROM recs", params)
            used = recs[recs["reason"].isna()]
            gone = sorted(set(used["subject_id"]) - set(used.loc[used["avisit"] == baseline, "subject_id"]))
            want = []
            for sid in gone:
                there = recs[(recs["subject_id"] == sid) & (recs["visit"] == baseline)]
                if not ((index["subject_id"] == sid) & (index["visit"] == baseline)).any():
                    why = f"no {baseline} session"
                elif there.empty:
                    why = f"no value of the metric at {baseline}"
                else:
                    why = None if there["reason"].isna().all() else f"{baseline} {there['reason'].dropna().min()}"
                want.append({"subject_id": sid, "reason": why})
            assert s.change_from_baseline(key, baseline=baseline).attrs["excluded"] == want, (baseline, key)
            seen += len(want)
    assert seen >= 10  # the fixture's windows, rescue, discontinuation and QC leave subjects without a baseline


@pytest.mark.parametrize("windows", ["exclude", "nominal"])
def test_of_two_captures_at_one_visit_the_latest_is_used_and_the_other_says_why(tmp_path, sample, study, windows):
    """S01's W4 photographed again an hour later (a repeat capture; its D0 replicate's response, a different
    analysis): the later capture is S01's W4 value, the earlier one is left out with its reason. A study where
    no visit holds two captures skips the choosing, and its records are those the choosing gives."""
    import dataclasses

    from skintrack.analysis.selection import records_sql

    m = pd.read_csv(sample / "manifest.csv")
    w4 = m[(m["subject_id"] == "S01") & (m["visit"] == "W4")].iloc[0]
    later = (pd.Timestamp(w4["taken_at"]) + pd.Timedelta(hours=1)).isoformat()
    m.loc[len(m)] = {**w4.to_dict(), "file": "repeats/S01_D0_r1.json", "taken_at": later}
    m["replicate"] = ""
    m.loc[(m["subject_id"] == "S01") & (m["visit"] == "W4"), "replicate"] = ["1", "2"]
    m.to_csv(tmp_path / "two.csv", index=False)
    folder = tmp_path / "two"
    skintrack.ingest([sample / "responses", sample / "repeats" / "S01_D0_r1.json"], folder,
                     manifest=tmp_path / "two.csv", subjects=sample / "subjects.csv")
    shutil.copy(sample / "plan.toml", folder / "plan.toml")
    s = _plan(folder, windows=windows)
    assert s.several_captures and not skintrack.open(study).several_captures
    ids = s.sql("SELECT analysis_id, taken_at FROM session_index WHERE subject_id = 'S01' AND visit = 'W4' "
                "ORDER BY taken_at")["analysis_id"].tolist()
    assert len(ids) == 2 and not s.qc().set_index("analysis_id").loc[ids, "flagged"].any()
    sql, params = records_sql("score.water", s.rules())
    recs = s.sql(f"WITH {sql} SELECT * FROM recs WHERE subject_id = 'S01' AND visit = 'W4'", params)
    reasons = recs.set_index("analysis_id")["reason"]
    assert len(reasons) == 2 and reasons[ids[0]] == "another capture of this visit is used" and pd.isna(reasons[ids[1]])
    later_value = s.sql("SELECT value FROM scores WHERE metric = 'water' AND analysis_id = ?", [ids[1]])["value"][0]
    tl = s.timeline("score.water")
    assert tl[(tl["subject_id"] == "S01") & (tl["visit"] == "W4")]["value"].tolist() == [later_value]

    s = _plan(study, windows=windows, rescue="hypothetical", discontinuation="hypothetical")
    for key in ("score.water", "severity.sensitivity"):
        r = s.rules()
        assert not r.several
        both = [s.sql(f"WITH {sql} SELECT * FROM recs ORDER BY analysis_id", params)
                for sql, params in (records_sql(key, r), records_sql(key, dataclasses.replace(r, several=True)))]
        pd.testing.assert_frame_equal(*both, check_exact=True)

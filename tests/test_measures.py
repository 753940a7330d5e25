"""Measures beside the photos (instrument readings, expert grades, questionnaires): the CSV and its
catalog line by line, every helper on a `measure.<name>` key, inter-rater reliability against R (psych)
and statsmodels, the Likert claim table against scipy, and the ADaM records of measures."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from statsmodels.stats.inter_rater import cohens_kappa

import skintrack
from skintrack.analysis.raters import icc2, weighted_kappa
from skintrack.errors import UsageError
from skintrack.sample import sample_study_dir

from test_mmrm import rscript  # noqa: F401 - the session's R


R_SCRIPT = Path(__file__).parent / "r" / "raters.R"
CATALOG = """
[corneometer]
description = "Hydration"
unit = "a.u."
range = [0, 130]
better = "higher"

[grade]
type = "grade"
levels = [0, 1, 2, 3]
better = "lower"

[feels_better]
type = "likert"
levels = [1, 2, 3, 4, 5]
agree = [4, 5]
better = "higher"
"""
GOOD = ["S01,D0,corneometer,40.5,2024-01-10,a.u.,,,1",
        "S01,D0,corneometer,41.5,2024-01-10,a.u.,,,2",
        "S01,W4,corneometer,50,2024-02-08,,,,",
        "S01,D0,grade,2,,,,R1,",
        "S01,D0,grade,3,,,,R2,",
        "S01,W4,feels_better,4,,,,,",
        "S01,W4,tewameter,12.5,,,,,"]
BAD = {"S01,W8,corneometer,abc,,,,,": "value 'abc' is not a number",
       "S01,W8,corneometer,131,,,,,": "corneometer 131 is outside its declared range [0, 130]",
       "S01,W8,grade,1.5,,,,R1,": "grade 1.5 is not one of its levels (0, 1, 2, 3)",
       "S01,W8,corneometer,50,,mg,,,": "corneometer is declared in 'a.u.', this row is in 'mg'",
       "S01,W8,,3,,,,,": "row has no `measure`",
       "S01,W8,Corneo meter,3,,,,,": "measure 'Corneo meter' is not a name",
       "S99,W8,corneometer,50,,,,,": "subject_id S99 is not in the study's subjects",
       "S01,W8,corneometer,50,2024-13-45,,,,": "taken_at '2024-13-45' is not an ISO 8601 date"}
HEADER = "subject_id,visit,measure,value,taken_at,unit,device,rater,replicate"


@pytest.fixture(scope="session")
def demo():
    from skintrack.demo import demo_study

    return demo_study()


def _study(tmp_path) -> Path:
    """A study of the sample's subjects and nothing else yet (measures need no photo)."""
    study = tmp_path / "study"
    skintrack.ingest([], study, subjects=sample_study_dir() / "subjects.csv")
    return study


def test_the_csv_goes_in_line_by_line_and_a_rerun_changes_nothing(tmp_path, run_cli):
    study = _study(tmp_path)
    (tmp_path / "m.toml").write_text(CATALOG)
    (tmp_path / "m.csv").write_text("\n".join([HEADER, *GOOD, *BAD]) + "\n")
    proc = run_cli("ingest", "--study", study, "--measures", tmp_path / "m.csv", "--measures-catalog",
                   tmp_path / "m.toml", "--quiet", check=1)
    lines = proc.stderr.splitlines()
    for k, (row, reason) in enumerate(BAD.items()):
        where = f"m.csv:{len(GOOD) + 2 + k}"
        assert any(where in line and reason in line for line in lines), (row, reason, proc.stderr)
    assert "measure tewameter has no declaration" in proc.stderr and "measure readings 7" in proc.stdout
    s = skintrack.open(study)
    assert len(s.readings()) == len(GOOD) and s.readings("measure.grade")["rater"].tolist() == ["R1", "R2"]
    assert s.timeline("measure.corneometer")["value"].tolist() == [41.0, 50.0]
    from skintrack.tables.catalog import metric_info

    assert metric_info("measure.tewameter")["type"] == "continuous"  # undeclared: continuous
    assert metric_info("measure.grade")["type"] == "grade" and metric_info("measure.feels_better")["agree"] == [4, 5]
    version, readings = s.version, s.readings()
    again = run_cli("ingest", "--study", study, "--measures", tmp_path / "m.csv", "--quiet", check=1)
    assert "measure readings 0" in again.stdout  # the same rows again: nothing new (the rejects are said again)
    pd.testing.assert_frame_equal(skintrack.open(study).readings(), readings)
    (tmp_path / "m.csv").write_text("\n".join([HEADER, GOOD[2].replace(",50,", ",52,")]) + "\n")
    run_cli("ingest", "--study", study, "--measures", tmp_path / "m.csv", "--quiet", check=0)
    assert skintrack.open(study).timeline("measure.corneometer")["value"].tolist() == [41.0, 52.0]  # an edit
    old = skintrack.open(study, version=version)
    assert old.timeline("measure.corneometer")["value"].tolist() == [41.0, 50.0]  # is a version


@pytest.mark.parametrize("catalog, says", [
    ("[x]\ntype = 'ratio'\n", "type 'ratio' is not one of"),
    ("[x]\ntype = 'grade'\n", "a grade needs its levels"),
    ("[x]\nrange = 'high'\n", "range must be a list"),
    ("[x]\nrange = [0, nan]\n", "range must be [low, high] (numbers; -inf or inf for an open end)"),  # TOML nan
    ("[x]\ntype = 'grade'\nlevels = [0, nan]\n", "levels must be numbers in their order"),
    ("[x]\nunits = 'a.u.'\n", "unknown field 'units'"),
    ("[X-1]\n", "a measure's name is lower-case"),
    ("[x]\ntype = 'likert'\nlevels = [1, 2, 3]\nagree = [4]\n", "agree lists levels"),
    ("[x]\ntype = 'likert'\nlevels = [1, 2, 3]\nagree = []\n", "agree lists levels"),  # nobody could agree
    # the grades' order is their numbers' (models, kappa's weights, responders): repeated, reversed or one level
    ("[x]\ntype = 'grade'\nlevels = [0, 1, 1, 2]\n", "each higher than the one before (got [0, 1, 1, 2])"),
    ("[x]\ntype = 'grade'\nlevels = [3, 2, 1]\n", "each higher than the one before"),
    ("[x]\ntype = 'grade'\nlevels = [0]\n", "levels must be two or more numbers"),
    ("[x]\nlevels = [1, 2]\n", "levels belong to a grade or a likert item (this measure is a continuous)"),
    ("[x]\ntype = 'flag'\nlevels = [1, 2]\n", "a flag's levels are 0 and 1"),
    ("[x\n", "not a readable TOML file")])
def test_a_catalog_that_cannot_be_used_is_refused_whole(tmp_path, catalog, says):
    study = _study(tmp_path)
    before = skintrack.open(study).version
    (tmp_path / "m.toml").write_text(catalog)
    (tmp_path / "m.csv").write_text(HEADER + "\n" + GOOD[0] + "\n")
    with pytest.raises(UsageError, match="m.toml") as e:
        skintrack.ingest([], study, measures=tmp_path / "m.csv", measures_catalog=tmp_path / "m.toml")
    assert says in str(e.value)
    assert skintrack.open(study).version == before


def test_a_catalog_the_study_keeps_is_read_by_the_rules_it_was_taken_under(tmp_path, monkeypatch):
    """A catalog kept before the order of levels was checked (levels from the highest) still opens its study,
    and a new measures file still goes in under it: a stricter rule never locks a study out."""
    from skintrack.tables import measures

    study = _study(tmp_path)
    (tmp_path / "m.toml").write_text("[grade]\ntype = 'grade'\nlevels = [3, 2, 1, 0]\n")
    (tmp_path / "m.csv").write_text(HEADER + "\nS01,D0,grade,2\n")
    with pytest.raises(UsageError, match="each higher than the one before"):
        skintrack.ingest([], study, measures=tmp_path / "m.csv", measures_catalog=tmp_path / "m.toml")
    lenient = measures.parse_catalog
    monkeypatch.setattr(measures, "parse_catalog", lambda text, where="", given=True: lenient(text, where, False))
    skintrack.ingest([], study, measures=tmp_path / "m.csv", measures_catalog=tmp_path / "m.toml")  # as before 0.2
    monkeypatch.undo()
    (tmp_path / "m2.csv").write_text(HEADER + "\nS02,D0,grade,1\n")
    skintrack.ingest([], study, measures=tmp_path / "m2.csv")
    assert skintrack.open(study).timeline("measure.grade")["value"].tolist() == [2.0, 1.0]


def test_a_study_of_measures_alone_assumes_its_first_measure_as_the_primary_endpoint(tmp_path, run_cli):
    """Without a plan, the assumed primary endpoint is the total score; a study with no photograph has none, so
    its first measure is assumed (and `plan --init` writes it), and the endpoint is a number, not "no value"."""
    src = sample_study_dir()
    skintrack.ingest([], tmp_path / "s", subjects=src / "subjects.csv", measures=src / "measures.csv",
                     measures_catalog=src / "measures.toml")
    s = skintrack.open(tmp_path / "s")
    assert s.plan.primary.metric == "measure.corneometer"
    assert any(a.startswith("primary endpoint measure.corneometer at W12 (the study's first measure")
               for a in s.plan.assumed)
    assert np.isfinite(s.endpoints()["estimate"].iloc[0])
    run_cli("plan", tmp_path / "s", "--init", check=0)
    assert 'primary = {metric = "measure.corneometer", visit = "W12"}' in (tmp_path / "s" / "plan.toml").read_text()


def test_every_helper_takes_a_measure_key(demo):
    s = demo
    key = "measure.corneometer"
    raw = s.readings(key).groupby(["subject_id", "visit"])["value"].mean()
    tl = s.timeline(key).set_index(["subject_id", "visit"])["value"]
    assert len(tl) == 96 and np.allclose(tl, raw.loc[tl.index])  # the mean of the three replicates
    ch = s.change_from_baseline(key)
    post = ch[~ch["is_baseline"]]
    assert np.allclose(post["delta"], post["value"] - post["baseline_value"])
    assert set(s.cohort(key)["visit"]) == {"D0", "W4", "W8", "W12"} and len(s.slopes(key)) == 24
    assert not s.responders(key, threshold=5.0).empty
    fit = s.mmrm(key)
    ep = s.endpoint(key, "W12")
    assert ep.at[0, "model"] == "mmrm" and ep.at[0, "estimate"] == pytest.approx(fit.diff("W12", "active")["estimate"])
    assert ep.at[0, "estimate"] > 0 and ep.at[0, "p"] < 0.05  # SIMULATED: the active arm's skin holds more water
    assert s.endpoint("measure.wrinkle_grade", "W12").at[0, "model"] == "proportional_odds"
    assert s.endpoint("measure.feels_hydrated", "W12").at[0, "model"] == "proportional_odds"


def test_a_measure_is_an_endpoint_of_the_plan_and_has_its_adam_records(demo, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(demo.path, study)
    from skintrack.tables.plan import Endpoint, Plan

    plan = Plan.read(study)
    plan.secondary.append(Endpoint("measure.corneometer", "W12"))
    plan.write(study)
    s = skintrack.open(study)
    table = s.endpoints()
    row = table[table["metric"] == "measure.corneometer"].iloc[0]
    assert row["estimate"] == pytest.approx(s.endpoint("measure.corneometer", "W12").at[0, "estimate"])
    from skintrack.show.adam import adam

    adsl, adskin = adam(s, ["score.water", "measure.corneometer", "measure.wrinkle_grade"])
    adskin = adskin.merge(adsl[["USUBJID", "SUBJID"]], on="USUBJID")
    mine = adskin[adskin["SRCVAR"] == "measure.corneometer"]
    assert set(mine["SRCDOM"]) == {"MEASURES"} and set(mine["PARAMCD"]) == {"MCRNMTR"}
    assert set(adskin.loc[adskin["SRCVAR"] == "score.water", "SRCDOM"]) == {"SKINAPI"}
    tl = s.timeline("measure.corneometer").set_index(["subject_id", "visit"])["value"]
    got = mine.set_index(["SUBJID", "AVISIT"])["AVAL"]
    assert np.allclose(got.loc[tl.index], tl)  # the ADaM value is the analysis value
    assert mine["PARAMN"].nunique() == 1 and mine["PARAMN"].iloc[0] > adskin.loc[
        adskin["SRCVAR"] == "score.water", "PARAMN"].iloc[0]
    readings = s.readings("measure.corneometer").groupby(["subject_id", "visit"]).size()
    dtype = mine.set_index(["SUBJID", "AVISIT"])["DTYPE"]
    assert (dtype.loc[readings.index] == np.where(readings > 1, "AVERAGE", "")).all()  # a mean of readings says so
    assert set(adskin.loc[adskin["SRCVAR"] == "score.water", "DTYPE"]) == {""}


def test_raters_equal_r_psych_and_statsmodels(rscript, tmp_path, demo):  # noqa: F811
    rng = np.random.default_rng(7)
    cases = {"demo": demo.readings("measure.wrinkle_grade").pivot_table(
        index=["subject_id", "visit"], columns="rater", values="value").to_numpy(float)}
    truth = rng.integers(0, 6, 30)
    cases["small, 2 raters"] = np.column_stack([np.clip(truth + rng.integers(-1, 2, 30), 0, 5),
                                                np.clip(truth + rng.integers(-1, 2, 30), 0, 5)]).astype(float)
    cases["3 raters"] = np.column_stack([np.clip(truth + rng.integers(-1, 2, 30), 0, 5) for _ in range(3)]).astype(float)
    low = rng.integers(0, 5, 12).astype(float)  # no residual: Satterthwaite's df at its limit, as psych reaches it
    cases["one rater a grade above the other"] = np.column_stack([low, low + 1])
    cases["the raters agree on every grade"] = np.column_stack([low, low])
    levels = [0.0, 1, 2, 3, 4, 5]
    for name, x in cases.items():
        pd.DataFrame(x, columns=[f"R{i + 1}" for i in range(x.shape[1])]).to_csv(tmp_path / "x.csv", index=False)
        subprocess.run([rscript, str(R_SCRIPT), str(tmp_path / "x.csv"), ",".join(map(str, levels)),
                        str(tmp_path / "out.csv")], check=True, capture_output=True)
        ref = pd.read_csv(tmp_path / "out.csv").set_index("statistic")
        got = icc2(x)
        for k in ("estimate", "ci_low", "ci_high"):
            assert got[k] == pytest.approx(ref.at["icc2", k], rel=1e-9), (name, k)
        if x.shape[1] == 2:
            kw = weighted_kappa(x[:, 0], x[:, 1], levels)
            assert kw["estimate"] == pytest.approx(ref.at["kappa_w", "estimate"], rel=1e-9), name
            if name == "the raters agree on every grade":  # the formula's variance is 0: its interval is the point
                assert ref.at["kappa_w", "ci_low"] == ref.at["kappa_w", "ci_high"] == 1.0  # 1, never a 95% interval
                assert np.isnan([kw["ci_low"], kw["ci_high"]]).all()
                continue
            for k in ("ci_low", "ci_high"):
                assert kw[k] == pytest.approx(ref.at["kappa_w", k], rel=1e-9), (name, k)
            table = pd.crosstab(pd.Categorical(x[:, 0], levels), pd.Categorical(x[:, 1], levels), dropna=False)
            sm = cohens_kappa(table.to_numpy(), wt="quadratic")
            assert kw["estimate"] == pytest.approx(sm.kappa, rel=1e-12)
            assert kw["ci_low"] == pytest.approx(max(-1, sm.kappa_low), rel=1e-9)
    same = np.ones((5, 2))  # every grade the same: neither is defined (psych: NaN), and no warning says so
    for got in (icc2(same), weighted_kappa(same[:, 0], same[:, 1], levels)):
        assert np.isnan([got["estimate"], got["ci_low"], got["ci_high"]]).all()
    one_grade = weighted_kappa([0, 1, 2, 1, 2, 0], [1, 1, 1, 1, 1, 1], levels)  # kappa 0 by construction: it printed
    assert one_grade["estimate"] == 0 and np.isnan([one_grade["ci_low"], one_grade["ci_high"]]).all()  # "0 to 0"
    table = demo.raters()
    assert table["statistic"].tolist() == ["ICC(2,1)", "weighted kappa (quadratic)"]
    assert table.at[0, "n"] == 96 and table.at[0, "raters"] == "R1, R2"


def test_the_likert_claim_is_the_share_agreeing_with_its_wilson_interval(demo):
    t = demo.claims("measure.feels_hydrated")
    assert t["visit"].tolist() == ["W4", "W12", "W4", "W12"] and t["arm"].tolist()[0] == "placebo"
    answers = demo.timeline("measure.feels_hydrated").merge(demo.sql("SELECT subject_id, arm FROM subjects"))
    for r in t.itertuples():
        g = answers[(answers["arm"] == r.arm) & (answers["visit"] == r.visit)]
        k = int(g["value"].isin([4, 5]).sum())
        ci = st.binomtest(k, len(g)).proportion_ci(method="wilson")
        assert (r.n, r.agreeing) == (len(g), k)
        assert r.agreeing_ci_low == pytest.approx(100 * ci.low, rel=1e-9)
        assert r.agreeing_ci_high == pytest.approx(100 * ci.high, rel=1e-9)


def test_agreement_pairs_an_instrument_with_the_photo_of_the_same_visit(demo):
    t = demo.agreement("score.water", "measure.corneometer")
    values = t.attrs["values"]
    assert len(values) == 93  # every capture QC kept, beside the Corneometer of its visit
    r = st.pearsonr(values["a"], values["b"])
    row = t.set_index(["on", "statistic"]).loc[("values", "pearson")]
    assert row["estimate"] == pytest.approx(r.statistic, rel=1e-12) and row["estimate"] > 0.8  # SIMULATED link


def test_the_cli_lists_the_measures_and_their_raters(run_cli, demo):
    listed = run_cli("metrics", "--study", demo.path, check=0).stdout
    assert "measure.corneometer" in listed and "measure.wrinkle_grade" in listed
    out = run_cli("raters", demo.path, check=0).stdout
    assert "ICC(2,1)" in out and "weighted kappa" in out
    assert "nothing to ingest" in run_cli("ingest", "--study", demo.path, check=2).stderr


def test_a_studys_measure_keys_are_its_own_after_another_study_queried(demo, tmp_path):
    """Two studies in one process: one without measures queries last; the other's helpers that take a list of
    metrics still know its measure keys before they run any query of their own (the export checked them against
    the other study's, found by the Spark test)."""
    other = skintrack.open(_study(tmp_path))
    assert other.sql("SELECT count(*) AS n FROM measures")["n"].tolist() == [0]  # its (no) measures declared last
    assert demo.metric_list(["score.water", "measure.corneometer"]) == ["score.water", "measure.corneometer"]
    other.sql("SELECT 1")
    files = skintrack.export(demo, tmp_path / "adam", ["csv"], metrics=["measure.corneometer"])
    assert "measure.corneometer" in (tmp_path / "adam" / "adskin.csv").read_text() and len(files) == 3
    with pytest.raises(skintrack.UnknownMetric):
        other.metric_list("measure.corneometer")

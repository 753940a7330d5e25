"""Every longitudinal figure recomputed independently with pandas, scipy and statsmodels (to 1e-9)."""
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
import statsmodels.formula.api as smf
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

import skintrack
from skintrack.tables.catalog import metric_info

from conftest import FIXTURES


METRICS = ["score.water", "count.blackhead.nose", "area.water.whole_face", "severity.pores.chin", "tone.ita",
           "wrinkle.forehead.score", "skin.age", "count.acne.front"]
TOL = dict(rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="session")
def s(tmp_path_factory):
    from skintrack.demo import demo_study

    return demo_study()


def raw_values(s, key):
    """The metric's (analysis_id, value) straight from the stored rows, by the catalog's JSON meaning."""
    info = metric_info(key)
    if info["table"] == "scores":
        df = s.sql("select * from scores")
        return df[df.metric == key[len("score."):]][["analysis_id", "value"]]
    if info["table"] in ("counts", "areas", "severities"):
        df = s.sql(f"select * from {info['table']}")
        region = df.region.isna() if info["region"] is None else df.region == info["region"]
        return df[(df.feature == info["feature"]) & region][["analysis_id", "value"]]
    if info["table"] == "wrinkles":
        df = s.sql("select * from wrinkles")
        return df[df.region == info["region"]].rename(columns={info["column"]: "value"})[["analysis_id", "value"]]
    src = "analyses" if info["table"] == "analyses" else info["table"]
    df = s.sql(f"select * from {src}")
    return df.rename(columns={info["column"]: "value"})[["analysis_id", "value"]].astype({"value": float})


def ref_obs(s, key):
    """One value per subject and visit, as the sample plan says: QC-flagged captures left out (its windows
    keep every capture of the sample trial)."""
    a = s.sql("select analysis_id, subject_id, visit, taken_at, ok from analyses")
    df = raw_values(s, key).merge(a, on="analysis_id")
    flagged = set(s.qc().query("flagged")["analysis_id"])
    df = df[df.ok & df.subject_id.notna() & df.value.notna() & ~df.analysis_id.isin(flagged)]
    df = df.sort_values(["taken_at", "analysis_id"], ascending=[False, True]).drop_duplicates(["subject_id", "visit"])
    df["days"] = (df.taken_at - df.groupby("subject_id").taken_at.transform("min")).dt.total_seconds() / 86400
    return df.sort_values(["subject_id", "taken_at"]).reset_index(drop=True)


def ref_change(s, key, baseline="D0"):
    """Changes from one baseline visit (the plan's): subjects without a value there are left out."""
    obs = ref_obs(s, key)
    base = obs[obs.visit == baseline]
    base = base[["subject_id", "value", "analysis_id"]].rename(columns={"value": "baseline_value",
                                                                        "analysis_id": "base_id"})
    ch = obs.merge(base, on="subject_id")
    ch["delta"] = ch.value - ch.baseline_value
    ch["pct_change"] = np.where(ch.baseline_value != 0, 100 * ch.delta / ch.baseline_value.abs(), np.nan)
    ch["is_baseline"] = ch.analysis_id == ch.base_id
    return ch


def key_sorted(df, cols):
    return df.sort_values(cols).reset_index(drop=True)


@pytest.mark.parametrize("key", METRICS)
def test_timeline(s, key):
    got = key_sorted(s.timeline(key), ["subject_id", "taken_at"])
    ref = ref_obs(s, key)
    assert got[["subject_id", "visit"]].values.tolist() == ref[["subject_id", "visit"]].values.tolist()
    np.testing.assert_allclose(got.value, ref.value, **TOL)
    np.testing.assert_allclose(got.days, ref.days, **TOL)


@pytest.mark.parametrize("key", METRICS)
@pytest.mark.parametrize("baseline", [None, "W4"])
def test_change_from_baseline(s, key, baseline):
    got = key_sorted(s.change_from_baseline(key, baseline=baseline), ["subject_id", "taken_at"])
    ref = key_sorted(ref_change(s, key, baseline or "D0"), ["subject_id", "taken_at"])
    assert len(got) == len(ref) > 0
    for col in ("value", "baseline_value", "delta", "pct_change"):
        np.testing.assert_allclose(got[col].astype(float), ref[col].astype(float), **TOL)
    better = metric_info(key)["better"]
    if better in ("higher", "lower"):
        expected = ref.delta > 0 if better == "higher" else ref.delta < 0
        assert got.improved.tolist() == expected.tolist()
    else:
        assert got.improved.isna().all()


@pytest.mark.parametrize("key", METRICS)
def test_slopes(s, key):
    got = s.slopes(key).set_index("subject_id")
    for sid, g in ref_obs(s, key).groupby("subject_id"):
        fit = st.linregress(g.days, g.value)
        row = got.loc[sid]
        assert row.n == len(g)
        assert math.isclose(row.slope_per_30d, fit.slope * 30, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(row.intercept, fit.intercept, rel_tol=1e-9, abs_tol=1e-9)
        expected_r2 = 1.0 if np.ptp(g.value) == 0 else fit.rvalue ** 2
        assert math.isclose(row.r2, expected_r2, rel_tol=1e-9, abs_tol=1e-9)
        assert (row["first"], row["last"]) == (g.value.iloc[0], g.value.iloc[-1])


@pytest.mark.parametrize("key", METRICS)
def test_cohort(s, key):
    got = s.cohort(key).set_index(["visit", "arm"])
    ch = ref_change(s, key).merge(s.sql("select subject_id, arm from subjects"), on="subject_id")
    for (visit, arm), g in ch.groupby(["visit", "arm"]):
        row = got.loc[(visit, arm)]
        n, mean, sd = len(g), g.value.mean(), g.value.std(ddof=1)
        half = st.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        assert row.n == n
        for col, want in [("mean", mean), ("sd", sd), ("sem", sd / math.sqrt(n)), ("ci_low", mean - half),
                          ("ci_high", mean + half), ("median", g.value.median()), ("q1", g.value.quantile(0.25)),
                          ("q3", g.value.quantile(0.75))]:
            assert math.isclose(row[col], want, rel_tol=1e-9, abs_tol=1e-9), (col, row[col], want)
        changes = g.delta[~g.is_baseline]  # baseline rows are no change
        assert row.change_n == len(changes) == (0 if visit == "D0" else n)
        if len(changes):
            assert math.isclose(row.change_mean, changes.mean(), rel_tol=1e-9, abs_tol=1e-9)
        else:
            assert pd.isna(row.change_mean) and pd.isna(row.change_ci_low)
        dsd = changes.std(ddof=1)
        if dsd > 0:
            dh = st.t.ppf(0.975, n - 1) * dsd / math.sqrt(n)
            assert math.isclose(row.change_ci_low, changes.mean() - dh, rel_tol=1e-9, abs_tol=1e-9)
    assert list(got.index.get_level_values("visit").unique()) == ["D0", "W4", "W8", "W12"]


@pytest.mark.parametrize("test", ["paired_t", "wilcoxon"])
def test_compare(s, test):
    """Within each arm (arms are never pooled), Holm and BH across the metrics."""
    got = s.compare(METRICS, "D0", "W12", test=test).set_index(["arm", "metric"])
    arms = s.sql("select subject_id, arm from subjects")
    for arm in ("active", "placebo"):
        ps = []
        for key in METRICS:
            obs = ref_obs(s, key).merge(arms, on="subject_id")
            obs = obs[obs.arm == arm]
            pair = obs[obs.visit == "D0"].merge(obs[obs.visit == "W12"], on="subject_id")
            d = pair.value_y - pair.value_x
            row = got.loc[(arm, key)]
            if d.std(ddof=1) == 0:  # every difference equal: no test (the mean difference stands)
                assert row.mean_diff == d.mean() and pd.isna(row.p) and pd.isna(row.dz)
                ps.append(np.nan)
                continue
            r = st.ttest_rel(pair.value_y, pair.value_x) if test == "paired_t" else st.wilcoxon(d)
            half = st.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
            assert row.n == len(d) == (11 if arm == "active" else 12)  # S11 W12 is QC-flagged
            for col, want in [("mean_diff", d.mean()), ("ci_low", d.mean() - half), ("ci_high", d.mean() + half),
                              ("statistic", r.statistic), ("p", r.pvalue), ("dz", d.mean() / d.std(ddof=1))]:
                assert math.isclose(row[col], want, rel_tol=1e-9, abs_tol=1e-12), (key, col)
            ps.append(r.pvalue)
        tested = ~np.isnan(ps)
        assert tested.sum() >= 6
        np.testing.assert_allclose(got.loc[arm].p_holm[tested], multipletests(np.array(ps)[tested], method="holm")[1], **TOL)
        np.testing.assert_allclose(got.loc[arm].p_bh[tested], multipletests(np.array(ps)[tested], method="fdr_bh")[1], **TOL)


@pytest.mark.parametrize("test", ["welch", "mannwhitney", "ancova"])
def test_compare_arms(s, test):
    got = s.compare_arms("score.water", "W12", test=test).iloc[0]
    ch = ref_change(s, "score.water").merge(s.sql("select subject_id, arm from subjects"), on="subject_id")
    ch = ch[ch.visit == "W12"]
    a, b = ch[ch.arm == "active"].delta, ch[ch.arm == "placebo"].delta
    if test == "ancova":
        fit = smf.ols("delta ~ treated + baseline_value", ch.assign(treated=(ch.arm == "active") * 1.0)).fit()
        want = {"diff": fit.params.treated, "p": fit.pvalues.treated, "ci_low": fit.conf_int().loc["treated", 0]}
    else:
        r = st.ttest_ind(a, b, equal_var=False) if test == "welch" else st.mannwhitneyu(a, b)
        want = {"diff": a.mean() - b.mean(), "p": r.pvalue, "statistic": r.statistic}
    assert (got.treatment, got.control, got.n_treatment, got.n_control) == ("active", "placebo", len(a), len(b))
    for col, value in want.items():
        assert math.isclose(got[col], value, rel_tol=1e-9), col


@pytest.mark.parametrize("relative, threshold", [(False, 5.0), (True, 10.0)])
def test_responders(s, relative, threshold):
    got = s.responders("score.water", threshold, relative=relative).set_index(["visit", "arm"])
    ch = ref_change(s, "score.water").merge(s.sql("select subject_id, arm from subjects"), on="subject_id")
    ch = ch[~ch.is_baseline]
    for (visit, arm), g in ch.groupby(["visit", "arm"]):
        k = int((g["pct_change" if relative else "delta"] >= threshold).sum())
        lo, hi = proportion_confint(k, len(g), method="wilson")
        row = got.loc[(visit, arm)]
        assert (row.n, row.responders) == (len(g), k)
        assert math.isclose(row.ci_low, lo, abs_tol=1e-9) and math.isclose(row.ci_high, hi, abs_tol=1e-9)


def test_responders_on_a_lower_is_better_metric_count_decreases(s):
    got = s.responders("severity.water", 5).set_index(["visit", "arm"])
    ch = ref_change(s, "severity.water").merge(s.sql("select subject_id, arm from subjects"), on="subject_id")
    g = ch[(ch.visit == "W12") & (ch.arm == "active")]
    assert got.loc[("W12", "active")].responders == int((-g.delta >= 5).sum())


def test_mmrm_on_the_study_is_fit_mmrm_on_the_changes(s):
    """Study.mmrm is the MMRM of the pandas-recomputed changes from the plan's baseline, QC-flagged captures
    out (the plan's rule); the MMRM itself is checked against R in test_mmrm.py."""
    from skintrack.analysis.mmrm import fit_mmrm

    got = s.mmrm("score.water")
    flagged = set(s.qc().query("flagged").analysis_id)
    obs = ref_obs(s, "score.water")
    obs = obs[~obs.analysis_id.isin(flagged)]
    base = obs[obs.visit == "D0"][["subject_id", "value"]].rename(columns={"value": "base"})
    post = obs[obs.visit != "D0"].merge(base, on="subject_id").merge(s.sql("select subject_id, arm from subjects"))
    ref = fit_mmrm(post.assign(subject=post.subject_id, chg=post.value - post.base), ["W4", "W8", "W12"], "placebo")
    pd.testing.assert_frame_equal(got.diffs, ref.diffs, rtol=1e-9)
    assert got.n_obs == 72 - 3 and got.excluded.empty and got.qc == "QC-flagged captures excluded"
    assert got.diff("W12")["ci_low"] > 0  # the simulated product works on hydration


def test_qc_flags_the_planted_capture_problems(s):
    q = s.qc()
    flagged = q[q.flagged].set_index(["subject_id", "visit"]).reasons.to_dict()
    assert flagged == {("S03", "W8"): "yaw_out", ("S07", "W4"): "glasses_changed",
                       ("S11", "W12"): "distance_changed"}
    assert len(q) == 96
    kept = s.timeline("score.water", exclude_flagged=True)
    assert len(kept) == 93 and ("S03", "W8") not in set(zip(kept.subject_id, kept.visit))


def test_qc_limits_are_parameters(s):
    from skintrack.analysis.qc import QCLimits

    loose = s.qc(QCLimits(max_yaw=40, ratio_tolerance=0.6))
    assert set(loose.loc[loose.flagged, "subject_id"]) == {"S07"}


def test_cohort_by_any_subject_or_manifest_column(s):
    with pytest.raises(skintrack.UsageError, match="would pool each subject's visits"):
        s.cohort("score.water", by="arm")
    by_arm = s.cohort("score.water", by=("visit", "arm"))
    assert by_arm[["visit", "arm", "n"]].values.tolist()[:2] == [["D0", "active", 12], ["D0", "placebo", 12]]
    by_operator = s.cohort("score.water", by=("visit", "operator"), exclude_flagged=False)  # every capture
    manifest = s.sql("select visit, operator, count(*) n from analyses group by all")
    merged = by_operator.merge(manifest, on=["visit", "operator"])
    assert len(merged) == len(by_operator) == len(manifest) and (merged.n_x == merged.n_y).all()


def test_unknown_metric_and_bad_grouping_are_clear(s):
    with pytest.raises(skintrack.UnknownMetric, match="did you mean score.water"):
        s.timeline("score.watr")
    with pytest.raises(skintrack.UsageError, match="cannot group by 'arm; drop table'"):
        s.cohort("score.water", by=("visit", "arm; drop table"))
    with pytest.raises(skintrack.UsageError, match="no better-direction"):
        s.responders("tone.ita", 1)


@pytest.fixture(scope="session")
def edge(tmp_path_factory, sample=None):
    """Edge cases: no baseline visit, a single visit, constant values, a metric missing for one analysis."""
    from skintrack.sample import sample_study_dir

    src = sample_study_dir() / "responses"
    folder = tmp_path_factory.mktemp("edge")
    (folder / "in").mkdir()
    rows = ["file,subject_id,visit,taken_at"]
    for sid, visit, day, name in [("E1", "W4", 28, "S01_W4"), ("E1", "W8", 56, "S01_W8"),
                                  ("E2", "D0", 0, "S02_D0"),
                                  ("E3", "D0", 0, "S04_D0"), ("E3", "W4", 28, "S04_D0"), ("E3", "W8", 56, "S04_D0"),
                                  ("E4", "D0", 0, "S05_D0")]:
        target = folder / "in" / f"{sid}_{visit}.json"
        data = (src / f"{name}.json").read_bytes()
        target.write_bytes(data + b" " * len(rows))  # same values, distinct bytes: distinct analyses
        rows.append(f"{target.name},{sid},{visit},2024-03-{1 + day // 7:02d}")
    shutil.copy(FIXTURES / "real" / "community-2023-full.json", folder / "in" / "E4_W4.json")
    rows.append("E4_W4.json,E4,W4,2024-03-05")
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    skintrack.ingest([folder / "in"], folder / "s", manifest=folder / "m.csv")
    return skintrack.open(folder / "s")


def test_edge_no_baseline_visit_is_left_out_and_listed(edge):
    ch = edge.change_from_baseline("score.water")  # the plan's baseline: D0, never a later visit
    assert "E1" not in set(ch.subject_id) and {"E2", "E3", "E4"} <= set(ch.subject_id)
    assert ch.attrs["excluded"] == [{"subject_id": "E1", "reason": "no D0 session"}]
    sens = edge.change_from_baseline("severity.sensitivity")  # E4's W4 (2023) has no sensitivity: not baseline
    assert sens.attrs["excluded"] == [{"subject_id": "E1", "reason": "no D0 session"}]
    at_w4 = edge.change_from_baseline("severity.sensitivity", baseline="W4", exclude_flagged=False).attrs["excluded"]
    assert at_w4 == [{"subject_id": "E2", "reason": "no W4 session"}, {"subject_id": "E4", "reason":
                                                                       "no value of the metric at W4"}]


def test_the_subjects_left_out_are_the_same_picked_in_the_query_or_from_all(edge, monkeypatch):
    """A few subjects left out are picked in the query; many are picked from every subject's records (a list
    filter is linear in the list): the same frames and reasons either way."""
    from skintrack.analysis import trends

    cases = [("score.water", {}), ("severity.sensitivity", {"baseline": "W4", "exclude_flagged": False})]
    picked = [edge.change_from_baseline(key, **kw) for key, kw in cases]
    monkeypatch.setattr(trends, "FEW_LEFT_OUT", 0)
    edge._results.clear()
    for (key, kw), want in zip(cases, picked):
        got = edge.change_from_baseline(key, **kw)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        assert got.attrs == want.attrs and got.attrs["excluded"]


def test_edge_single_visit_and_constant_values(edge):
    sl = edge.slopes("score.water").set_index("subject_id")
    assert sl.loc["E2", "n"] == 1 and pd.isna(sl.loc["E2", "slope_per_30d"])
    assert sl.loc["E3", "slope_per_30d"] == 0 and sl.loc["E3", "r2"] == 1.0
    cmp = edge.compare(["score.water"], "D0", "W4", exclude_flagged=False).iloc[0]  # E4 W4 is another face: QC flags it
    tl = edge.timeline("score.water", exclude_flagged=False).set_index(["subject_id", "visit"]).value
    e4 = tl[("E4", "W4")] - tl[("E4", "D0")]  # E3 does not change; E4 does
    assert cmp.n == 2 and cmp.mean_diff == e4 / 2 and cmp.dz == pytest.approx((e4 / 2) / np.std([0, e4], ddof=1))
    wil = edge.compare(["score.water"], "D0", "W8", test="wilcoxon").iloc[0]
    assert (wil.n, wil.mean_diff) == (1, 0.0) and pd.isna(wil.p)


def test_edge_metric_missing_for_some_analyses(edge):
    tl = edge.timeline("severity.sensitivity", exclude_flagged=False)  # the 2023 response has no sensitivity block
    assert ("E4", "W4") not in set(zip(tl.subject_id, tl.visit)) and ("E4", "D0") in set(zip(tl.subject_id, tl.visit))
    water = edge.timeline("score.water", exclude_flagged=False)
    assert ("E4", "W4") in set(zip(water.subject_id, water.visit))


def test_without_dates_visits_follow_their_labels(tmp_path, sample, run_cli):
    rows = [line.split(",") for line in (sample / "manifest.csv").read_text().splitlines()[1:]]
    (tmp_path / "m.csv").write_text("file,subject_id,visit\n" + "".join(f"{r[0]},{r[1]},{r[2]}\n" for r in rows))
    skintrack.ingest([sample / "responses"], tmp_path / "s", manifest=tmp_path / "m.csv",
                     subjects=sample / "subjects.csv")
    s = skintrack.open(tmp_path / "s")
    assert s.visits == ["D0", "W4", "W8", "W12"]
    ch = s.change_from_baseline("score.water")
    assert ch[ch.subject_id == "S01"]["visit"].tolist() == ["D0", "W4", "W8", "W12"]
    assert ch[ch.visit == "D0"]["delta"].abs().max() == 0
    assert [v.day for v in s.plan.visits] == [None] * 4  # unknown, not NaN: a starter plan of it reads back
    assert run_cli("plan", tmp_path / "s", "--init", check=0).stdout.startswith("wrote ")
    assert "day" not in (tmp_path / "s" / "plan.toml").read_text().split("visits = ")[1].split("\n")[0]

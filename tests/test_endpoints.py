"""Endpoint models against independent implementations: R (MASS::glm.nb, glm, MASS::polr, wilcox.test) and
statsmodels (Newcombe, odds ratio, TOST), on data with ties, zero counts, empty grades and missing visits;
repeatability against a direct computation from the repeat captures."""
import itertools
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from statsmodels.stats.contingency_tables import Table2x2
from statsmodels.stats.proportion import confint_proportions_2indep
from statsmodels.stats.weightstats import ttost_ind

import skintrack
from skintrack.analysis import endpoints as ep
from skintrack.analysis import stats
from skintrack.demo import ingest_sample

from test_mmrm import rscript  # noqa: F401 - the session fixture that installs R when missing

R_SCRIPT = Path(__file__).parent / "r" / "endpoints.R"


def r_ref(rscript, tmp_path, kind, frame, arms=("placebo", "active")):  # noqa: F811
    frame.to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "d.csv.arms").write_text("\n".join(arms) + "\n")
    subprocess.run([rscript, str(R_SCRIPT), kind, str(tmp_path / "d.csv"), str(tmp_path / "o.csv")], check=True,
                   capture_output=True)
    return pd.read_csv(tmp_path / "o.csv").iloc[0]


def frame(rng, n, make):
    """A SIMULATED arm x (baseline, value) frame; some subjects miss the visit (value NaN, left out)."""
    rows = []
    for i in range(2 * n):
        arm = "active" if i % 2 else "placebo"
        base, value = make(rng, arm)
        rows.append({"arm": arm, "base": base, "value": np.nan if rng.random() < 0.1 else value})
    return pd.DataFrame(rows)


def counts(rng, arm):
    base = rng.negative_binomial(2, 0.1)  # mean 18, overdispersed; zeros happen
    mu = (base + 1) * (0.6 if arm == "active" else 1.0)
    return base, rng.negative_binomial(1.5, 1.5 / (1.5 + mu))


def grades(rng, arm):
    base = rng.choice([0, 1, 3], p=[0.3, 0.4, 0.3])  # grade 2 is empty at baseline
    shift = rng.choice([-1, 0, 0, 1]) - (arm == "active")
    return base, int(np.clip(base + shift, 0, 3))


def flags(rng, arm):
    base = int(rng.random() < 0.5)
    return base, int(rng.random() < (0.3 if arm == "active" else 0.6) + 0.2 * base)


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_negative_binomial_matches_glm_nb(seed, rscript, tmp_path):  # noqa: F811
    data = frame(np.random.default_rng(seed), 25, counts)
    assert (data["value"] == 0).any() or (data["base"] == 0).any()
    got = ep.negative_binomial(data, "active", "placebo")
    ref = r_ref(rscript, tmp_path, "nb", data.dropna())
    assert got["method"] == "negative binomial (rate ratio)"
    assert rel(got["log_estimate"], ref["b"]) < 1e-6 and rel(got["std_error"], ref["se"]) < 1e-5
    assert rel(got["theta"], ref["theta"]) < 1e-4


def test_counts_without_overdispersion_fall_back_to_poisson(rscript, tmp_path):  # noqa: F811
    rng = np.random.default_rng(4)
    data = pd.DataFrame({"arm": ["active", "placebo"] * 20, "base": rng.integers(3, 8, 40).astype(float)})
    data["value"] = np.where(data["arm"] == "active", 4, 5) + (np.arange(40) % 3 == 0)  # less spread than Poisson
    got = ep.negative_binomial(data, "active", "placebo")
    ref = r_ref(rscript, tmp_path, "poisson", data)
    assert got["method"].startswith("poisson") and rel(got["log_estimate"], ref["b"]) < 1e-8
    assert rel(got["std_error"], ref["se"]) < 1e-8


@pytest.mark.parametrize("seed", [1, 2])
def test_proportional_odds_matches_polr(seed, rscript, tmp_path):  # noqa: F811
    data = frame(np.random.default_rng(seed), 30, grades)
    got = ep.proportional_odds(data, "active", "placebo")
    ref = r_ref(rscript, tmp_path, "polr", data.dropna())
    assert rel(got["log_estimate"], ref["b"]) < 1e-5 and rel(got["std_error"], ref["se"]) < 1e-3


def test_logistic_matches_glm(rscript, tmp_path):  # noqa: F811
    data = frame(np.random.default_rng(5), 30, flags)
    got = ep.logistic(data, "active", "placebo")
    ref = r_ref(rscript, tmp_path, "logistic", data.dropna())
    assert rel(got["log_estimate"], ref["b"]) < 1e-7 and rel(got["std_error"], ref["se"]) < 1e-6


@pytest.mark.parametrize("ties", [False, True])
def test_hodges_lehmann_matches_wilcox_test(ties, rscript, tmp_path):  # noqa: F811
    rng = np.random.default_rng(6)
    a, b = rng.normal(2, 3, 14), rng.normal(0, 3, 12)
    if ties:
        a, b = np.round(a), np.round(b)
    got = ep.hodges_lehmann(a, b)
    ref = r_ref(rscript, tmp_path, "hl", pd.DataFrame({"arm": ["active"] * 14 + ["placebo"] * 12, "base": 0,
                                                       "value": np.concatenate([a, b])}))
    tol = 1e-10 if not ties else 1e-3  # R finds the approximate interval's ends by uniroot (tol 1e-4)
    assert got["method"] == ("normal approximation" if ties else "exact")
    for mine, theirs in ((got["shift"], ref["b"]), (got["ci_low"], ref["lo"]), (got["ci_high"], ref["hi"])):
        assert abs(mine - theirs) < tol, (got, ref)


def test_hedges_g_matches_r(rscript, tmp_path):  # noqa: F811
    rng = np.random.default_rng(7)
    a, b = rng.normal(1, 2, 15), rng.normal(0, 2, 13)
    got = ep.hedges_g(a, b)
    ref = r_ref(rscript, tmp_path, "g", pd.DataFrame({"arm": ["active"] * 15 + ["placebo"] * 13, "base": 0,
                                                      "value": np.concatenate([a, b])}))
    assert rel(got["g"], ref["b"]) < 1e-9 and rel(got["ci_low"], ref["lo"]) < 1e-6 and rel(got["ci_high"], ref["hi"]) < 1e-6


def test_hodges_lehmann_of_tiny_or_constant_arms_is_refused_where_r_refuses(rscript, tmp_path):  # noqa: F811
    """Arms that each hold one value raised "The function value at x=1.0 is NaN" out of the endpoint (R's
    wilcox.test stops too); arms of 3 and 3 printed as 95% an exact interval whose level is 90% (R warns "not
    achievable" and gives 0.9 aside). Where R calls its interval 95% (arms of 4 and 3: 94.3%), ours equals it."""
    for a, b in (([3.0, 4, 5, 7], [1.0, 2, 0]), ([3.0, 5], [1.0, 2, 0, 4, -2, -3])):
        got = ep.hodges_lehmann(a, b)
        ref = r_ref(rscript, tmp_path, "hl", pd.DataFrame({"arm": ["active"] * len(a) + ["placebo"] * len(b),
                                                           "base": 0, "value": a + b}))
        assert (got["shift"], got["ci_low"], got["ci_high"]) == (ref["b"], ref["lo"], ref["hi"])
    for a, b in (([1.0, 1], [0.0, 0]), ([3.0], [1.0]), ([1.0, 1, 1], [0.0, 0, 0, 0])):
        got = ep.hodges_lehmann(a, b)
        assert got["shift"] == a[0] - b[0] and np.isnan([got["ci_low"], got["ci_high"]]).all()
        assert got["method"] == "no interval (each arm holds one value)"
    for a, b in (([3.0, 4, 5], [1.0, 2, 0]), ([3.0, 5], [1.0, 2, 0, 4, -2])):
        got = ep.hodges_lehmann(a, b)
        assert np.isnan([got["ci_low"], got["ci_high"]]).all() and got["shift"] == np.median(np.subtract.outer(a, b))
        assert got["method"] == f"no 95% interval (arms of {len(a)} and {len(b)}: an exact one reaches 90% at most)"


@pytest.mark.parametrize("k_t, n_t, k_c, n_c", [(9, 12, 3, 12), (12, 12, 5, 12), (0, 10, 4, 11), (7, 20, 7, 20)])
def test_responders_between_arms_match_statsmodels(k_t, n_t, k_c, n_c):
    got = ep.responder_difference(k_t, n_t, k_c, n_c)
    lo, hi = confint_proportions_2indep(k_t, n_t, k_c, n_c, method="newcomb", compare="diff")
    assert abs(got["rd_ci_low"] - lo) < 1e-12 and abs(got["rd_ci_high"] - hi) < 1e-12
    cells = np.array([[k_t, n_t - k_t], [k_c, n_c - k_c]], float)
    table = Table2x2(cells + 0.5 if (cells == 0).any() else cells)  # Haldane-Anscombe: 0.5 to every cell
    assert rel(got["odds_ratio"], table.oddsratio) < 1e-12
    assert np.allclose([got["or_ci_low"], got["or_ci_high"]], table.oddsratio_confint(), rtol=1e-12)


def test_fisher_exact_matches_r_and_scipy(rscript, tmp_path):  # noqa: F811
    tables = [(9, 3, 3, 9), (5, 5, 5, 5), (3, 7, 7, 3), (0, 10, 4, 7), (12, 0, 5, 7), (0, 12, 0, 12), (1, 0, 0, 1),
              (7, 13, 7, 13), (150, 50, 120, 80), (2, 198, 11, 189), (40, 160, 40, 160)]
    pd.DataFrame(tables, columns=list("abcd")).to_csv(tmp_path / "t.csv", index=False)
    script = ("t <- read.csv(commandArgs(TRUE)[1]); p <- apply(t, 1, function(r) fisher.test(matrix(r, 2, byrow = "
              "TRUE))$p.value); writeLines(sprintf('%.17g', p), commandArgs(TRUE)[2])")
    subprocess.run([rscript, "-e", script, str(tmp_path / "t.csv"), str(tmp_path / "p.txt")], check=True,
                   capture_output=True)
    for table, theirs in zip(tables, map(float, (tmp_path / "p.txt").read_text().split())):
        assert rel(stats.fisher_exact_p(*table), theirs) < 1e-12, (table, theirs)
    for k_t, k_c in itertools.product(range(13), range(11)):  # every table of arms of 12 and 10
        table = (k_t, 12 - k_t, k_c, 10 - k_c)
        theirs = scipy.stats.fisher_exact([table[:2], table[2:]])[1]
        assert rel(stats.fisher_exact_p(*table), theirs) < 1e-12, (table, theirs)


def test_tost_matches_statsmodels():
    rng = np.random.default_rng(8)
    a, b = rng.normal(0.3, 1, 20), rng.normal(0, 1.4, 18)
    got = ep.tost(a, b, margin=1.0)
    p, lower, upper = ttost_ind(a, b, -1.0, 1.0, usevar="unequal")
    assert rel(got["p"], p) < 1e-10 and rel(got["p_lower"], lower[1]) < 1e-10 and rel(got["p_upper"], upper[1]) < 1e-10
    assert got["equivalent"] == (p < 0.05) and got["ci_low"] > -1.0


def test_the_study_picks_the_model_by_type_and_the_plan(tmp_path):
    ingest_sample(tmp_path / "s")
    s = skintrack.open(tmp_path / "s")
    models = {k: s.endpoint(k, "W12")["model"].iloc[0] for k in
              ("count.blackhead.nose", "severity.pores.chin", "score.water")}
    assert models == {"count.blackhead.nose": "negative_binomial", "severity.pores.chin": "proportional_odds",
                      "score.water": "mmrm"}
    with pytest.raises(skintrack.UsageError, match="without an order"):
        s.endpoint("tone.ita_class", "W12")
    water = s.endpoint("score.water", "W12", margin=2.0).iloc[0]
    assert water["estimate"] == s.mmrm("score.water").diff("W12")["estimate"] and not water["equivalent"]
    resp = s.responders_between("score.water", "W12").iloc[0]
    assert resp["threshold"] == 5.0 and resp["n_treatment"] + resp["n_control"] == 23  # S11's W12 is QC-flagged


def test_a_comparison_at_the_baseline_visit_is_refused_by_name(tmp_path):
    """Every helper that compares changes between arms at a visit refuses the baseline visit (where every
    change is 0 and none is left to compare), instead of a row of NaN or an error about something else."""
    ingest_sample(tmp_path / "s")
    s = skintrack.open(tmp_path / "s")
    said = "D0 is the baseline visit: a change from baseline is compared at a later visit (W4, W8, W12)"
    for name, ask in [("compare_arms welch", lambda: s.compare_arms("score.water", "D0")),
                      ("compare_arms ancova", lambda: s.compare_arms("score.water", "D0", "ancova")),
                      ("endpoint by the MMRM", lambda: s.endpoint("score.water", "D0")),
                      ("endpoint of a count", lambda: s.endpoint("count.blackhead.nose", "D0")),
                      ("responders_between", lambda: s.responders_between("score.water", "D0")),
                      ("shift_table", lambda: s.shift_table("severity.pores.chin", "D0")),
                      ("waterfall", lambda: s.plot.waterfall("score.water", "D0"))]:
        with pytest.raises(skintrack.UsageError) as e:
            ask()
        assert str(e.value) == said, name
    with pytest.raises(skintrack.UsageError, match=r"the baseline and the follow-up are the same visit \(W4\)"):
        s.compare("score.water", "W4", "W4")
    fit = s.mmrm("score.water")
    with pytest.raises(skintrack.UsageError, match="no single difference at visit 'D0': the fit has W4 .active.; W8"):
        fit.diff("D0")


def test_a_difference_shows_its_p_value_unrounded():
    """`fit.diff` is a dict of plain values: a p of 1e-9 reads as itself (a row of mixed types as a pandas
    Series shows 0.0), and every value is the `.diffs` row's."""
    from skintrack.demo import demo_study

    fit = demo_study().mmrm("score.water")
    row = fit.diffs[fit.diffs["visit"] == "W12"].iloc[0]
    got = fit.diff("W12")
    assert got == row.to_dict() and all(type(v) in (str, float) for v in got.values())
    assert got["p"] < 1e-6 and repr(got["p"]) in repr(got) and repr(got["p"]) in str(got)


def test_repeatability_is_the_direct_computation_from_repeat_captures(tmp_path):
    ingest_sample(tmp_path / "s", repeats=True)
    s = skintrack.open(tmp_path / "s")
    got = s.repeatability(["score.water", "area.water.whole_face"]).set_index("metric")
    assert s.check().empty  # repeat captures told apart by `replicate` are no problem
    values = s.sql("""SELECT a.subject_id, a.analysis_id, m.metric, m.value FROM metrics m JOIN analyses a
                      USING (analysis_id) WHERE a.visit = 'D0' AND m.metric IN ('score.water', 'area.water.whole_face')""")
    for metric, g in values.groupby("metric"):
        pairs = g.groupby("subject_id")["value"].agg(list)
        assert (pairs.map(len) == 2).all() and len(pairs) == 24
        d = np.array([x[0] - x[1] for x in pairs])
        sem = np.sqrt(np.mean(d ** 2 / 2))  # each pair's variance is (x1 - x2)^2 / 2
        means = np.array([np.mean(x) for x in pairs])
        msb, msw = 2 * np.var(means, ddof=1), sem ** 2
        row = got.loc[metric]
        assert (row["sessions"], row["captures"]) == (24, 48)
        assert rel(row["sem"], sem) < 1e-12 and rel(row["mdc95"], 1.96 * np.sqrt(2) * sem) < 1e-12
        assert rel(row["icc"], (msb - msw) / (msb + msw)) < 1e-12
        assert rel(row["cv_pct"], 100 * sem / g["value"].mean()) < 1e-12
    plan = s.plan
    assert plan.responders == {"score.water": 5.0}
    mdc = s.responders_between("score.water", "W12", threshold="mdc").iloc[0]
    assert mdc["threshold"] == got.loc["score.water", "mdc95"]


def separated(rng, arm):
    base = float(rng.normal(0, 1))
    return base, 1 if arm == "active" else int(rng.random() < 0.4)  # every treated subject has the flag


def test_separation_is_fitted_by_firths_penalised_likelihood_as_brglm2(rscript, tmp_path):  # noqa: F811
    data = frame(np.random.default_rng(11), 10, separated).dropna()
    got = ep.logistic(data, "active", "placebo")
    ref = r_ref(rscript, tmp_path, "firth", data)
    assert "Firth" in got["method"] and np.isfinite(got["ci_high"])
    assert rel(got["log_estimate"], ref["b"]) < 1e-6 and rel(got["std_error"], ref["se"]) < 1e-6


def test_two_grades_share_the_firth_path_and_one_grade_is_not_estimable():
    rng = np.random.default_rng(12)
    data = frame(rng, 10, lambda r, arm: (int(r.random() < 0.5), 2 if arm == "active" else int(r.random() < 0.5) + 1))
    got = ep.proportional_odds(data.dropna(), "active", "placebo")
    assert got["method"].startswith("proportional odds with two grades: logistic, Firth's")
    with pytest.raises(skintrack.UsageError, match=r"not estimable \(every subject grade 1 at this visit\)"):
        ep.proportional_odds(data.assign(value=1.0), "active", "placebo")


def test_an_unbounded_ratio_is_not_estimable_with_why_not_an_overflow():
    """Separated grades and an arm with no count: the likelihood has no maximum (R's polr and glm.nb return a
    coefficient of 12-30 with an SE of 45 and more); the ratio is refused with why, never e^b (OverflowError)."""
    rng = np.random.default_rng(1)
    grades = frame(rng, 10, lambda r, arm: (int(r.integers(0, 4)), int(r.integers(3, 5)) if arm == "active" else
                                            int(r.integers(0, 3)))).dropna()
    with pytest.raises(skintrack.UsageError, match=r"^not estimable \(every active grade is above every placebo grade"):
        ep.proportional_odds(grades, "active", "placebo")
    near = grades.copy()
    near.loc[near.index[near["arm"] == "active"][0], "value"] = 2.0  # one grade in common: the maximum runs off
    with pytest.raises(skintrack.UsageError, match=r"^not estimable \(the model's estimate did not settle"):
        ep.proportional_odds(near, "active", "placebo")
    counts = frame(rng, 10, lambda r, arm: (int(r.integers(0, 4)), int(r.integers(1, 6)) if arm == "active" else 0))
    with pytest.raises(skintrack.UsageError, match=r"^not estimable \(every count of placebo is 0"):
        ep.negative_binomial(counts.dropna(), "active", "placebo")


def test_the_supplementary_shift_and_effect_size_of_changes_that_never_vary_are_nan_not_a_crash():
    """Every change at the visit 0 (a wrinkle ratio that stays 0 at W12): R's wilcox.test refuses the interval
    and Hedges' g has no SD to divide by. They are NaN, and the MMRM's own numbers stand (the endpoint raised
    "The function value at x=0.0 is NaN")."""
    hl = ep.hodges_lehmann(np.zeros(60), np.zeros(55))
    assert np.isnan([hl["shift"], hl["ci_low"], hl["ci_high"]]).all()
    assert hl["method"] == "not estimable (every value is the same)"
    g = ep.hedges_g(np.zeros(8), np.zeros(9))
    assert np.isnan([g["g"], g["ci_low"], g["ci_high"]]).all()
    assert np.isnan(ep.hedges_g([1.0], [2.0, 3.0])["g"])  # one value in an arm: no SD of it
    assert np.isfinite(ep.hedges_g([1.0, 1.0], [2.0, 3.0])["g"])  # one arm without spread: the pooled SD has some


def test_hedges_g_of_arms_that_barely_vary_has_its_interval_or_none_and_stops_nothing():
    """Arms that differ by thousands of their SD: the search for the interval's limits widened from t by steps
    of 1 and raised ValueError out of the endpoint (the whole endpoints table and report stopped). The steps
    now grow with t; where SciPy's noncentral t CDF is NaN the limit is NaN."""
    from scipy.stats import chi2

    a, b = np.array([5, 5, 5, 5.001]), np.zeros(4)
    g = ep.hedges_g(a, b)
    # far out, T = (Z + ncp) / S is ncp / S to 1e-4: each limit is g times a quantile of S = sqrt(chi2_6 / 6)
    np.testing.assert_allclose([g["ci_low"], g["ci_high"]],
                               g["g"] * np.sqrt(chi2.ppf([0.025, 0.975], 6) / 6), rtol=2e-4)
    far = ep.hedges_g(np.array([5, 5, 5, 5.0001]), b)
    assert far["g"] > 1e5 and np.isnan([far["ci_low"], far["ci_high"]]).all()


def test_a_non_estimable_endpoint_stops_no_other(tmp_path, run_cli):
    ingest_sample(tmp_path / "s")
    plan = (tmp_path / "s" / "plan.toml").read_text().replace(
        '{ metric = "score.melanin", visit = "W12" },', '{ metric = "score.melanin", visit = "W12" },\n'
        '    { metric = "severity.melasma_presence", visit = "W12" },')
    (tmp_path / "s" / "plan.toml").write_text(plan)
    s = skintrack.open(tmp_path / "s")
    table = s.endpoints()
    last = table.iloc[-1]
    assert last["metric"] == "severity.melasma_presence" and last["decision"] == "not estimable"
    assert last["reason"].startswith("not estimable (every subject has flag")
    assert table["decision"].iloc[:3].tolist() == ["significant"] * 3
    proc = run_cli("endpoints", tmp_path / "s")
    assert proc.returncode == 0 and "not estimable: severity.melasma_presence at W12, active: not estimable" in proc.stdout
    from skintrack.show.report import build_report

    r = build_report(s, tmp_path / "r", metrics=["score.water"], pdf=False)
    assert "No between-arm comparison was possible" not in r.html.read_text() and len(r.findings) == 4
    assert "improved it by" in r.findings[0] and "not estimable" in r.findings[3]


def test_dunnett_equals_multcomp(rscript, tmp_path):  # noqa: F811
    from skintrack.analysis import multiplicity

    est = np.array([2.4, 1.1, 2.9])
    cov = np.array([[1.0, 0.45, 0.5], [0.45, 1.2, 0.55], [0.5, 0.55, 1.1]])
    df = 24  # mvtnorm (under multcomp) takes whole degrees of freedom only
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    p = multiplicity.dunnett(est / sd, corr, df)
    q = multiplicity.dunnett_quantile(0.95, corr, df)
    pd.DataFrame({"estimate": est, "df": df, "q": q, **{f"v{i + 1}": cov[:, i] for i in range(3)}}).to_csv(
        tmp_path / "in.csv", index=False)
    subprocess.run([rscript, str(Path(__file__).parent / "r" / "dunnett.R"), str(tmp_path / "in.csv"),
                    str(tmp_path / "out.csv")], check=True, capture_output=True)
    r = pd.read_csv(tmp_path / "out.csv")
    np.testing.assert_allclose(p, r["p"], atol=3e-5)  # three arms: two quasi-Monte Carlo integrations
    assert abs(r["coverage"].iloc[0] - 0.95) < 3e-5
    two = multiplicity.dunnett(est[:2] / sd[:2], corr[:2, :2], df)  # two arms: exact
    pd.DataFrame({"estimate": est[:2], "df": df, "q": multiplicity.dunnett_quantile(0.95, corr[:2, :2], df),
                  **{f"v{i + 1}": cov[:2, i] for i in range(2)}}).to_csv(tmp_path / "in.csv", index=False)
    subprocess.run([rscript, str(Path(__file__).parent / "r" / "dunnett.R"), str(tmp_path / "in.csv"),
                    str(tmp_path / "out.csv")], check=True, capture_output=True)
    r = pd.read_csv(tmp_path / "out.csv")
    np.testing.assert_allclose(two, r["p"], atol=1e-7)
    assert abs(r["coverage"].iloc[0] - 0.95) < 1e-7


def test_three_arms_are_one_family_adjusted_by_dunnett_and_dose_order_stops_at_the_first_failure(tmp_path):
    from test_trial import three_arm_study

    s = three_arm_study(tmp_path)
    table = s.endpoints()
    assert "Dunnett single-step over 2 arms" in table["method"].iloc[0]
    assert (table["p_adjusted"] >= table["p"]).all() and table.attrs["arm_comparisons"] == "dunnett"
    fit = s.mmrm(s.plan.primary.metric)
    assert (table["ci_high"] - table["ci_low"] > fit.diffs.query("visit == 'W12'")["ci_high"].to_numpy()
            - fit.diffs.query("visit == 'W12'")["ci_low"].to_numpy()).all()  # simultaneous intervals are wider
    (tmp_path / "s" / "plan.toml").write_text((tmp_path / "s" / "plan.toml").read_text().replace(
        'arm_comparisons = "dunnett"', 'arm_comparisons = "dose_order"') if (tmp_path / "s" / "plan.toml").exists()
        else 'arm_comparisons = "dose_order"\n')
    ordered = skintrack.open(tmp_path / "s").endpoints()
    assert "dose order" in ordered["method"].iloc[0] and ordered.attrs["arm_comparisons"] == "dose_order"


def test_every_interval_is_95_percent_and_only_dunnetts_are_called_simultaneous(tmp_path):
    """The plan's alpha set the level of Dunnett's intervals (90% at alpha 0.1) while the report called them
    95%, and a family Holm adjusts (a count's model is fitted pair by pair) was said to have simultaneous ones."""
    from test_trial import three_arm_study

    from skintrack.show.report import finding
    from skintrack.tables.plan import Endpoint

    s = three_arm_study(tmp_path)
    at_05 = s.endpoints()
    replace(s.plan, alpha=0.1, multiplicity="holm", secondary=[Endpoint("count.blackhead.nose", "W12")]).write(s.path)
    table = skintrack.open(s.path).endpoints()
    mmrm, counts = table[table["model"] == "mmrm"], table[table["model"] == "negative_binomial"]
    assert len(mmrm) == len(counts) == 2 and mmrm["ci_simultaneous"].all() and not counts["ci_simultaneous"].any()
    pd.testing.assert_frame_equal(mmrm[["ci_low", "ci_high"]], at_05[["ci_low", "ci_high"]])  # alpha moves no interval
    unadjusted = s.mmrm(mmrm["metric"].iloc[0]).diffs.query(f"visit == {mmrm['visit'].iloc[0]!r}")
    assert (mmrm["ci_high"].to_numpy() - mmrm["ci_low"].to_numpy()
            > unadjusted["ci_high"].to_numpy() - unadjusted["ci_low"].to_numpy()).all()
    assert counts["method"].str.endswith("; Holm over 2 arms").all()
    said = [finding(r, table.attrs) for r in table.itertuples()]
    assert all("(simultaneous 95% CI " in f for f in said[:2]) and all("(95% CI " in f for f in said[2:])


def test_dunnett_below_one_degree_of_freedom_gives_way_to_holm():
    """Below 1 df the multivariate t's probabilities are off (0.954 for 0.95 at 0.8 df, by simulation), and the
    critical value's search stopped at 50 with a bare ValueError; Holm adjusts such a family, saying why."""
    from skintrack.analysis import multiplicity
    from skintrack.analysis.trial import _family
    from skintrack.tables.plan import Plan

    corr = np.array([[1.0, 0.5], [0.5, 1.0]])
    q = multiplicity.dunnett_quantile(0.95, corr, 0.6)  # two arms: the exact integral holds down to ~0.5 df
    rng = np.random.default_rng(1)
    z, chi = rng.multivariate_normal([0, 0], corr, 400_000), np.sqrt(rng.chisquare(0.6, 400_000) / 0.6)
    assert q > 50 and abs(np.mean(np.abs(z / chi[:, None]).max(axis=1) <= q) - 0.95) < 0.002

    class Fit:  # what _family reads of an MMRM fit: the contrasts and their joint covariance
        def contrast_vector(self, visit, treatment):
            return np.array([1.0, 0.0]) if treatment == "low" else np.array([0.0, 1.0])

        def covariance_of(self, vectors):
            return np.array([[4.0, 2.0], [2.0, 4.0]])

    def rows(df):
        return [{"visit": "W12", "treatment": t, "estimate": e, "p": p, "df": df, "method": "MMRM", "ci_low": -1.0,
                 "ci_high": 1.0} for t, e, p in (("low", 5.0, 0.04), ("high", 9.0, 0.01))]

    plan = Plan(control="vehicle", treatments=["low", "high"], arm_comparisons="dunnett")
    few, enough = rows(0.8), rows(12.0)
    _family(few, Fit(), plan)
    _family(enough, Fit(), plan)
    assert [r["p_family"] for r in few] == pytest.approx([0.04, 0.02])  # Holm's
    assert few[0]["method"] == "MMRM; Holm over 2 arms (Dunnett needs at least 1 df: 0.80)"
    assert not any(r["ci_simultaneous"] for r in few) and (few[0]["ci_low"], few[0]["ci_high"]) == (-1.0, 1.0)
    assert all(r["ci_simultaneous"] for r in enough) and "Dunnett single-step" in enough[0]["method"]


def test_equivalence_comes_from_the_primary_models_90_percent_interval(tmp_path):
    ingest_sample(tmp_path / "s")
    s = skintrack.open(tmp_path / "s")
    row = s.endpoint("score.rough", "W12", margin=8.0).iloc[0]
    ninety = s.mmrm("score.rough").contrasts({"d": s.mmrm("score.rough").contrast_vector("W12", "active")},
                                              level=0.90).iloc[0]
    assert (row["tost_ci_low"], row["tost_ci_high"]) == (ninety["ci_low"], ninety["ci_high"])
    assert row["equivalent"] == (-8.0 < ninety["ci_low"] and ninety["ci_high"] < 8.0)


def test_repeatability_intervals_equal_psych_icc(rscript, tmp_path):  # noqa: F811
    ingest_sample(tmp_path / "s", repeats=True)
    s = skintrack.open(tmp_path / "s")
    got = s.repeatability(["score.water"]).iloc[0]
    values = s.sql("""SELECT a.subject_id, a.taken_at, m.value FROM metrics m JOIN analyses a USING (analysis_id)
                      WHERE a.visit = 'D0' AND m.metric = 'score.water' ORDER BY a.subject_id, a.taken_at""")
    wide = values.assign(k=values.groupby("subject_id").cumcount()).pivot(index="subject_id", columns="k",
                                                                          values="value")
    wide.to_csv(tmp_path / "w.csv", index=False)
    script = ("suppressMessages(library(psych)); w <- read.csv(commandArgs(TRUE)[1]); "
              "r <- ICC(w, lmer = FALSE)$results; write.csv(r[r$type == 'ICC1', c('ICC', 'lower bound', "
              "'upper bound')], commandArgs(TRUE)[2], row.names = FALSE)")
    subprocess.run([rscript, "-e", script, str(tmp_path / "w.csv"), str(tmp_path / "icc.csv")], check=True,
                   capture_output=True)
    ref = pd.read_csv(tmp_path / "icc.csv").iloc[0]
    assert rel(got["icc"], ref["ICC"]) < 1e-10
    assert rel(got["icc_ci_low"], ref["lower bound"]) < 1e-10 and rel(got["icc_ci_high"], ref["upper bound"]) < 1e-10
    from scipy import stats

    df_w = got["captures"] - got["sessions"]
    assert rel(got["sem_ci_high"], np.sqrt(df_w * got["sem"] ** 2 / stats.chi2.ppf(0.025, df_w))) < 1e-12
    assert rel(got["mdc95_ci_low"], 1.96 * np.sqrt(2) * got["sem_ci_low"]) < 1e-12

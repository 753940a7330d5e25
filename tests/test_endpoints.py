"""Endpoint models against independent implementations: R (MASS::glm.nb, glm, MASS::polr, wilcox.test) and
statsmodels (Newcombe, odds ratio, TOST), on data with ties, zero counts, empty grades and missing visits;
repeatability against a direct computation from the repeat captures."""
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import Table2x2
from statsmodels.stats.proportion import confint_proportions_2indep
from statsmodels.stats.weightstats import ttost_ind

import skintrack
from skintrack.analysis import endpoints as ep
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


@pytest.mark.parametrize("k_t, n_t, k_c, n_c", [(9, 12, 3, 12), (12, 12, 5, 12), (0, 10, 4, 11), (7, 20, 7, 20)])
def test_responders_between_arms_match_statsmodels(k_t, n_t, k_c, n_c):
    got = ep.responder_difference(k_t, n_t, k_c, n_c)
    lo, hi = confint_proportions_2indep(k_t, n_t, k_c, n_c, method="newcomb", compare="diff")
    assert abs(got["rd_ci_low"] - lo) < 1e-12 and abs(got["rd_ci_high"] - hi) < 1e-12
    cells = np.array([[k_t, n_t - k_t], [k_c, n_c - k_c]], float)
    table = Table2x2(cells + 0.5 if (cells == 0).any() else cells)  # Haldane-Anscombe: 0.5 to every cell
    assert rel(got["odds_ratio"], table.oddsratio) < 1e-12
    assert np.allclose([got["or_ci_low"], got["or_ci_high"]], table.oddsratio_confint(), rtol=1e-12)


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

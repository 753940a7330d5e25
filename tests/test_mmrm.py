"""The MMRM against R on studies with missing visits, three arms, small arms and one visit:

* Satterthwaite: nlme::gls + emmeans with an exact Satterthwaite reference (tests/r/mmrm.R);
* every covariance structure: nlme::gls (corSymm/corAR1/corCompSymm/corExp, and corARMA of order T - 1 for
  Toeplitz, + varIdent) to 1e-6;
* Kenward-Roger: pbkrtest and lmerTest on compound symmetry (the same model as lmer's random intercept),
  and the paper's formulas written in R (tests/r/structures.R) on every structure;
* the empirical covariance of the fallbacks: clubSandwich's CR2 with its Satterthwaite df.
"""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import debian_install

from skintrack.analysis.mmrm import _cr2_df, fit_mmrm

R_DIR = Path(__file__).parent / "r"
R_PACKAGES = ("r-base-core", "r-cran-nlme", "r-cran-emmeans", "r-cran-mass", "r-cran-pbkrtest", "r-cran-lme4",
              "r-cran-lmertest", "r-cran-clubsandwich", "r-cran-mice", "r-cran-multcomp", "r-cran-psych",
              "r-cran-brglm2", "r-cran-epir")
R_LIBRARIES = ("nlme", "emmeans", "MASS", "pbkrtest", "lme4", "lmerTest", "clubSandwich", "mice", "multcomp", "psych",
               "brglm2", "epiR")


def ensure_r() -> str:
    """Rscript with the reference packages, installed from Debian's packages when missing (as root)."""
    probe = "suppressMessages({" + "; ".join(f"library({x})" for x in R_LIBRARIES) + "})"
    if shutil.which("Rscript") is None or subprocess.run(["Rscript", "-e", probe], capture_output=True).returncode:
        debian_install(*R_PACKAGES)
    return shutil.which("Rscript")


@pytest.fixture(scope="session")
def rscript():
    exe = ensure_r()
    assert exe, "R is needed for the statistics references: apt-get install " + " ".join(R_PACKAGES)
    return exe


def simulate(seed, arms=("placebo", "active"), visits=("W4", "W8", "W12"), n=20, missing=0.15, effect=1.5,
             sds=None):
    """SIMULATED trial data: correlated, heteroscedastic visits; a share of visits missing at random; the day
    of each capture near its nominal day."""
    rng = np.random.default_rng(seed)
    t = len(visits)
    sd = np.linspace(2, 3, t) if sds is None else np.asarray(sds, float)
    corr = 0.6 ** np.abs(np.subtract.outer(range(t), range(t))) + np.eye(t) * 0.1
    cov = corr * np.outer(sd, sd)
    rows = []
    for i in range(n * len(arms)):
        arm = arms[i % len(arms)]
        base = rng.normal(50, 6)
        e = rng.multivariate_normal(np.zeros(t), cov)
        for j, v in enumerate(visits):
            if j and rng.random() < missing:  # the first post-baseline visit is always there
                continue
            gain = effect * (j + 1) * arms.index(arm) / max(1, len(arms) - 1)
            rows.append({"subject": f"S{i:03d}", "arm": arm, "visit": v, "base": base,
                         "chg": 0.3 * (base - 50) + gain + e[j], "days": 28.0 * (j + 1) + int(rng.integers(-3, 4))})
    return pd.DataFrame(rows)


def r_mmrm(rscript, tmp_path, data, visits, arms, base_by_visit=False):
    data.to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "d.csv.arms").write_text("\n".join(arms) + "\n")
    (tmp_path / "d.csv.visits").write_text("\n".join(visits) + "\n")
    subprocess.run([rscript, str(R_DIR / "mmrm.R"), str(tmp_path / "d.csv"), str(tmp_path / "ls.csv"),
                    str(tmp_path / "diffs.csv"), "yes" if base_by_visit else "no"], check=True, capture_output=True)
    ls = pd.read_csv(tmp_path / "ls.csv").astype({"visit": str})
    diffs = pd.read_csv(tmp_path / "diffs.csv").astype({"visit": str})
    diffs["treatment"] = diffs["contrast"].str.split(" - ").str[0].str.strip("()")
    return ls, diffs


def compare(fit, ls, diffs):
    """The largest relative differences: estimates (against the SE where the estimate is near 0), SEs, df."""
    m = fit.lsmeans.merge(ls, on=["arm", "visit"], suffixes=("", "_r"))
    d = fit.diffs.merge(diffs, on=["visit", "treatment"], suffixes=("", "_r"))
    assert len(m) == len(fit.lsmeans) == len(ls) and len(d) == len(fit.diffs) == len(diffs)
    rel = lambda a, b, scale: float(np.max(np.abs(a - b) / scale))  # noqa: E731
    return {"estimate": max(rel(m["estimate"], m["emmean"], np.maximum(m["emmean"].abs(), m["SE"])),
                            rel(d["estimate"], d["estimate_r"], np.maximum(d["estimate_r"].abs(), d["SE"]))),
            "se": max(rel(m["std_error"], m["SE"], m["SE"]), rel(d["std_error"], d["SE"], d["SE"])),
            "df": max(rel(m["df"], m["df_ref"], m["df_ref"]), rel(d["df"], d["df_ref"], d["df_ref"]))}


CASES = {
    "two arms, missing visits": dict(seed=1),
    "three arms, missing visits": dict(seed=2, arms=("placebo", "low", "high")),
    "one post-baseline visit": dict(seed=3, visits=("W12",), missing=0),
    "four visits, 30% missing": dict(seed=4, visits=("W2", "W4", "W8", "W12"), missing=0.3, n=25),
    "no effect, complete": dict(seed=5, missing=0, effect=0),
    "small arms, 2 x 8": dict(seed=9, n=8, missing=0.1, sds=(2, 4, 6)),
}


def _arms_visits(spec):
    return list(spec.get("arms", ("placebo", "active"))), list(spec.get("visits", ("W4", "W8", "W12")))


@pytest.mark.parametrize("case", list(CASES))
def test_satterthwaite_matches_r(case, rscript, tmp_path):
    spec = CASES[case]
    data = simulate(**spec)
    arms, visits = _arms_visits(spec)
    fit = fit_mmrm(data, visits, control=arms[0], df="satterthwaite", guard=False)  # exactly as asked, even at 2 x 8
    assert fit.covariance == "unstructured" and fit.converged and fit.df_method == "satterthwaite"
    worst = compare(fit, *r_mmrm(rscript, tmp_path, data, visits, arms))
    assert worst["estimate"] < 1e-6 and worst["se"] < 1e-6 and worst["df"] < 1e-4, worst


def test_baseline_by_visit_matches_r(rscript, tmp_path):
    data = simulate(6)
    fit = fit_mmrm(data, ["W4", "W8", "W12"], control="placebo", base_by_visit=True, df="satterthwaite")
    worst = compare(fit, *r_mmrm(rscript, tmp_path, data, ["W4", "W8", "W12"], ["placebo", "active"],
                                 base_by_visit=True))
    assert worst["estimate"] < 1e-6 and worst["se"] < 1e-6 and worst["df"] < 1e-4, worst


def _r_name(term: str) -> str:
    return term.replace("arm[", "arm").replace("visit[", "visit").replace("]", "")


def r_structure(rscript, tmp_path, data, visits, arms, structure, fit):
    """Run tests/r/structures.R on `data` for `structure`, with our fit's treatment-minus-control contrasts."""
    data.assign(day=data["days"]).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "d.csv.arms").write_text("\n".join(arms) + "\n")
    (tmp_path / "d.csv.visits").write_text("\n".join(visits) + "\n")
    names = [_r_name(t) for t in fit.coefficients["term"]]
    vectors = {f"{v} {a}": fit.contrast_vector(v, a) for v in visits for a in arms[1:]}
    pd.DataFrame([dict(zip(names, c)) for c in vectors.values()]).to_csv(tmp_path / "d.csv.contrasts", index=False)
    proc = subprocess.run([rscript, str(R_DIR / "structures.R"), str(tmp_path / "d.csv"), structure,
                           str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = {"coef": pd.read_csv(tmp_path / "r-coef.csv").set_index("term")["estimate"][names].to_numpy(),
           "vcov": pd.read_csv(tmp_path / "r-vcov.csv", index_col=0).loc[names, names].to_numpy(),
           "kr": pd.read_csv(tmp_path / "r-kr.csv"), "vectors": vectors}
    for extra in ("cr2", "lmer"):
        if (tmp_path / f"r-{extra}.csv").exists():
            out[extra] = pd.read_csv(tmp_path / f"r-{extra}.csv")
    return out


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.maximum(np.abs(np.asarray(b)), 1e-3)))


DESIGNS = {"three arms, missing visits": dict(seed=2, arms=("placebo", "low", "high")),
           "small arms, 2 x 8, visit SDs 2-6": dict(seed=11, n=8, missing=0.1, sds=(2, 4, 6))}


@pytest.mark.parametrize("structure", ["unstructured", "toeplitz_h", "ar1_h", "cs_h", "spatial_power", "toeplitz", "cs",
                                       "ar1"])
@pytest.mark.parametrize("design", list(DESIGNS))
def test_each_structure_and_kenward_roger_equal_r(structure, design, rscript, tmp_path):
    """REML estimates and the model-based covariance equal nlme::gls; the Kenward-Roger SEs and df equal the
    paper's formulas computed in R from gls's own fit, all to 1e-6 relative."""
    spec = DESIGNS[design]
    data = simulate(**spec)
    arms, visits = _arms_visits(spec)
    fit = fit_mmrm(data, visits, arms[0], structures=[structure], variance="model", guard=False)  # as asked
    assert fit.covariance == structure and fit.df_method == "kenward-roger" and not fit.tried
    r = r_structure(rscript, tmp_path, data, visits, arms, structure, fit)
    se = fit.coefficients["std_error"].to_numpy()
    assert float(np.max(np.abs(fit.coefficients["estimate"] - r["coef"]) / np.maximum(np.abs(r["coef"]), se))) < 1e-6
    assert float(np.max(np.abs(fit._inference.Phi - r["vcov"])) / np.max(np.abs(r["vcov"]))) < 1e-6
    ours = fit.contrasts(r["vectors"])
    assert _rel(ours["estimate"], r["kr"]["estimate"]) < 1e-6
    assert _rel(ours["std_error"], r["kr"]["se"]) < 1e-6 and _rel(ours["df"], r["kr"]["df"]) < 1e-6


def test_kenward_roger_equals_pbkrtest_and_lmertest_on_compound_symmetry(rscript, tmp_path):
    spec = DESIGNS["three arms, missing visits"]
    data = simulate(**spec)
    arms, visits = _arms_visits(spec)
    fit = fit_mmrm(data, visits, arms[0], structures=["cs"], variance="model")
    r = r_structure(rscript, tmp_path, data, visits, arms, "cs", fit)["lmer"]
    ours = fit.contrasts({f"{v} {a}": fit.contrast_vector(v, a) for v in visits for a in arms[1:]})
    assert _rel(ours["estimate"], r["estimate"]) < 1e-6
    assert _rel(ours["std_error"], r["se"]) < 1e-6 and _rel(ours["std_error"], r["se_pbkrtest"]) < 1e-6
    assert _rel(ours["df"], r["df"]) < 1e-6 and _rel(ours["df"], r["df_pbkrtest"]) < 1e-6


@pytest.mark.parametrize("structure", ["toeplitz_h", "ar1_h", "cs_h"])
def test_the_empirical_covariance_of_a_fallback_equals_clubsandwich_cr2(structure, rscript, tmp_path):
    spec = DESIGNS["small arms, 2 x 8, visit SDs 2-6"]
    data = simulate(**spec)
    arms, visits = _arms_visits(spec)
    fit = fit_mmrm(data, visits, arms[0], structures=[structure], guard=False)  # auto: empirical unless UN
    assert fit.variance == "empirical" and fit.df_method == "bell-mccaffrey"
    r = r_structure(rscript, tmp_path, data, visits, arms, structure, fit)
    ours = fit.contrasts(r["vectors"])
    assert _rel(ours["std_error"], r["cr2"]["se"]) < 1e-6 and _rel(ours["df"], r["cr2"]["df"]) < 1e-6


def test_kenward_roger_only_widens_the_model_based_interval():
    """Phi_A - Phi is positive semi-definite for a structure linear in its parameters: every KR standard error
    is at least the model-based one, on each of 10 small SIMULATED trials."""
    for seed in range(10):
        data = simulate(100 + seed, n=8, missing=0.1, sds=(2, 4, 6))
        kr = fit_mmrm(data, ["W4", "W8", "W12"], "placebo")
        sat = fit_mmrm(data, ["W4", "W8", "W12"], "placebo", df="satterthwaite", guard=False)
        np.testing.assert_allclose(kr.diffs["estimate"], sat.diffs["estimate"], rtol=1e-12)
        assert np.linalg.eigvalsh(kr._inference.V - sat._inference.V).min() > -1e-12
        assert (kr.diffs["std_error"] >= sat.diffs["std_error"]).all()


def test_a_structure_that_fails_falls_back_to_a_heterogeneous_one_with_empirical_inference():
    data = simulate(8, n=4, missing=0)  # 8 subjects, 3 visits: the unstructured information is singular
    data.loc[data["visit"] == "W8", "chg"] = data.loc[data["visit"] == "W4", "chg"].to_numpy() + 1.0
    fit = fit_mmrm(data, ["W4", "W8", "W12"], control="placebo")
    assert fit.tried and fit.tried[0].startswith("UN: ") and fit.covariance in ("toeplitz_h", "ar1_h", "cs_h")
    assert fit.variance == "empirical" and "fell back: UN:" in fit.why and "CR2" in fit.method


def _in_units(data, scale):
    return data.assign(base=data["base"] * scale, chg=data["chg"] * scale)


def _unitless(fit, scale) -> np.ndarray:
    """A fit's LS-means, differences and their SEs in the units of scale 1, and its df."""
    return np.r_[fit.lsmeans["estimate"] / scale, fit.diffs["estimate"] / scale, fit.diffs["std_error"] / scale,
                 fit.lsmeans["std_error"] / scale, fit.diffs["df"], fit.lsmeans["df"]]


@pytest.mark.parametrize("structure", ["unstructured", "toeplitz_h", "ar1_h", "cs_h", "spatial_power", "ar1",
                                       "cs", "toeplitz"])
def test_a_fit_does_not_depend_on_the_metrics_units(structure):
    """The same trial in the units of an area fraction (x 0.001) and of a pixel count (x 1000): every estimate,
    SE and df is the same, by each inference. (The Newton steps floored the Hessian's eigenvalues at an
    absolute 1e-8: the heterogeneous structures failed to converge beyond a factor of 100 either way, and the
    unstructured one from x 1000.)"""
    data = simulate(1, arms=("placebo", "low", "high"), n=12)
    for df, variance in (("kenward-roger", "model"), ("satterthwaite", "model"), ("kenward-roger", "empirical")):
        fits = {scale: fit_mmrm(_in_units(data, scale), ["W4", "W8", "W12"], "placebo", structures=[structure],
                                df=df, variance=variance, guard=False) for scale in (1.0, 1e-3, 1e3)}
        assert {f.covariance for f in fits.values()} == {structure}
        for scale in (1e-3, 1e3):
            np.testing.assert_allclose(_unitless(fits[scale], scale), _unitless(fits[1.0], 1.0), rtol=1e-5)


def test_a_subject_alone_in_its_arm_at_a_visit_keeps_the_empirical_df_defined_in_any_units():
    """A subject alone in its arm at a visit is fitted exactly (leverage 1): its CR2 adjustment has a zero
    eigenvalue, computed as ~1e-15 of the largest. Taken as zero by an absolute 1e-12 (clubSandwich's) only in
    some units, in others its inverse root of ~1e7 made every df of the fit meaningless, or a division by 0."""
    data = simulate(1, n=5, missing=0)
    alone = data[(data["arm"] == "active") & (data["visit"] == "W4")]["subject"].iloc[0]
    data = data[~((data["arm"] == "active") & (data["visit"] == "W4") & (data["subject"] != alone))]
    fits = {scale: fit_mmrm(_in_units(data, scale), ["W4", "W8", "W12"], "placebo", structures=["ar1_h"],
                            guard=False) for scale in (1.0, 1e-2, 1e2)}
    assert (fits[1.0].diffs["df"] > 1).all() and fits[1.0].variance == "empirical"
    nothing = np.zeros((1, len(fits[1.0].coefficients)))
    assert np.isnan(_cr2_df(nothing, *fits[1.0]._inference._cr2))  # a contrast without variance has no df
    for scale in (1e-2, 1e2):
        np.testing.assert_allclose(_unitless(fits[scale], scale), _unitless(fits[1.0], 1.0), rtol=1e-5)


FIVE_VISITS = ["W4", "W8", "W12", "W16", "W20"]


def test_a_start_newton_cannot_leave_is_retried_from_the_visits_variances_alone(rscript, tmp_path, monkeypatch):
    """A design found by a random search against R (12 per arm, five visits, 27% missing): from the pairwise
    covariance, which is near singular here, Newton's steps wander along the edge of the admissible set (where
    they end is chaotic: here it is made certain) and do not converge; from the variances alone with no
    correlation (nlme's own start) the fit reaches R's optimum."""
    from skintrack.analysis import mmrm

    data = simulate(117, arms=("placebo", "zeta"), visits=FIVE_VISITS, n=12, missing=0.27182751311424036,
                    effect=-0.5581349154742719, sds=(2.81009028569163, 1.8610072454964885, 3.64030381102413,
                                                     2.2620616368834474, 1.3158646438461359))
    newton, starts = mmrm._newton, []

    def wanders_from_the_first_start(reml, phi0, max_iter=200):
        starts.append(np.asarray(phi0))
        return None if len(starts) == 1 else newton(reml, phi0, max_iter)

    monkeypatch.setattr(mmrm, "_newton", wanders_from_the_first_start)
    fit = fit_mmrm(data, FIVE_VISITS, "placebo", df="satterthwaite", guard=False)
    assert fit.covariance == "unstructured" and not fit.tried and len(starts) == 2
    no_correlation = np.zeros((5, 5))
    no_correlation[np.tril_indices(5)] = starts[1]
    assert np.all(np.diag(no_correlation) > 0) and not np.any(np.tril(no_correlation, -1))
    worst = compare(fit, *r_mmrm(rscript, tmp_path, data, FIVE_VISITS, ["placebo", "zeta"]))
    assert worst["estimate"] < 1e-5 and worst["se"] < 1e-5 and worst["df"] < 1e-4, worst


def test_an_unstructured_likelihood_that_rises_to_a_singular_covariance_is_refused_with_why(rscript, tmp_path):
    """12 per arm, five visits, a quarter of them missing: 15 covariance parameters the data cannot hold. The
    likelihood rises toward a singular covariance, so there is no optimum to report: R's gls stops with an
    error, the fit here says why and, by default, falls back to a heterogeneous structure."""
    from skintrack import UsageError

    data = simulate(11, visits=FIVE_VISITS, n=12, missing=0.25, sds=(3, 2, 3.5, 2, 1.5), effect=0)
    with pytest.raises(UsageError, match=r"^score: the MMRM could not be fitted with any covariance structure \(UN: "
                                         r"its likelihood keeps rising toward a singular covariance of the visits"):
        fit_mmrm(data, FIVE_VISITS, "placebo", structures=["unstructured"], metric="score")
    fit = fit_mmrm(data, FIVE_VISITS, "placebo", metric="score")
    assert fit.covariance != "unstructured" and fit.tried[0].startswith("UN: its likelihood keeps rising")
    with pytest.raises(subprocess.CalledProcessError):
        r_mmrm(rscript, tmp_path, data, FIVE_VISITS, ["placebo", "active"])


def test_visits_whose_changes_move_together_exactly_are_named_among_the_causes():
    from skintrack import UsageError

    data = simulate(1, missing=0)
    w4 = data[data["visit"] == "W4"].set_index("subject")["chg"]
    data.loc[data["visit"] == "W8", "chg"] = data.loc[data["visit"] == "W8", "subject"].map(w4).to_numpy() + 1.0
    with pytest.raises(UsageError, match="singular covariance of the visits .* or visits whose changes move together "
                                         "exactly"):
        fit_mmrm(data, ["W4", "W8", "W12"], "placebo", structures=["unstructured"])


def test_an_mmrm_refusal_without_a_metric_starts_with_what_failed():
    from skintrack import UsageError

    data = simulate(11, visits=FIVE_VISITS, n=12, missing=0.25, sds=(3, 2, 3.5, 2, 1.5), effect=0)
    with pytest.raises(UsageError, match=r"^the MMRM could not be fitted"):
        fit_mmrm(data, FIVE_VISITS, "placebo", structures=["unstructured"])


def test_only_heterogeneous_structures_are_fallbacks():
    from skintrack.analysis.covariance import FALLBACK, STRUCTURES

    assert all(STRUCTURES[s].heterogeneous for s in FALLBACK)


def test_an_arm_without_an_observation_at_a_visit_is_named():
    from skintrack import UsageError

    data = simulate(1, arms=("placebo", "low", "high"), n=6)
    data = data[~((data["arm"] == "low") & (data["visit"] == "W8"))]
    with pytest.raises(UsageError, match="^score: no observation of low at W8: the model estimates each arm at each "
                                         "visit$"):
        fit_mmrm(data, ["W4", "W8", "W12"], "placebo", metric="score")


def test_a_metric_that_never_moved_is_refused_with_why():
    from skintrack import UsageError

    data = simulate(1).assign(chg=0.0)  # no wrinkle at any visit
    with pytest.raises(UsageError, match="^wrinkles: every subject's change from baseline is 0: the MMRM has nothing "):
        fit_mmrm(data, ["W4", "W8", "W12"], "placebo", metric="wrinkles")


def test_bad_choices_are_refused_by_name():
    from skintrack import UsageError

    data = simulate(1)
    with pytest.raises(UsageError, match="df 'containment'"):
        fit_mmrm(data, ["W4", "W8", "W12"], "placebo", df="containment")
    with pytest.raises(UsageError, match="covariance banded"):
        fit_mmrm(data, ["W4", "W8", "W12"], "placebo", structures=["banded"])


def test_the_small_trial_guard_keeps_a_small_trial_off_the_liberal_paths():
    """Below 15 per arm, Satterthwaite becomes Kenward-Roger and heterogeneous Toeplitz is not tried (both
    liberal at 8 per arm in benchmarks/operating.py); the result says so; from 15 per arm the plan is kept."""
    small = simulate(**DESIGNS["small arms, 2 x 8, visit SDs 2-6"])
    fit = fit_mmrm(small, ["W4", "W8", "W12"], "placebo", df="satterthwaite")
    assert fit.df_method == "kenward-roger" and "Satterthwaite's degrees of freedom replaced" in fit.method
    kr = fit_mmrm(small, ["W4", "W8", "W12"], "placebo")
    pd.testing.assert_frame_equal(fit.diffs, kr.diffs)
    toep = fit_mmrm(small, ["W4", "W8", "W12"], "placebo", structures=["toeplitz_h"])
    assert toep.covariance == "ar1_h" and "heterogeneous Toeplitz not used" in toep.method
    assert toep.variance == "empirical"
    large = simulate(3, n=15)
    assert fit_mmrm(large, ["W4", "W8", "W12"], "placebo", df="satterthwaite").df_method == "satterthwaite"
    assert fit_mmrm(large, ["W4", "W8", "W12"], "placebo", structures=["toeplitz_h"]).covariance == "toeplitz_h"
    assert not fit_mmrm(large, ["W4", "W8", "W12"], "placebo").guarded


def test_a_fit_starts_lean_in_a_command():
    """A fit loads no scipy.linalg (0.3 s of CPU to import; numpy's LAPACK does the same factorisations), and the
    command sets OpenBLAS to one thread before numpy loads, a user's own setting kept."""
    import sys

    fit = ("import sys, os, skintrack.cli; loaded = 'numpy' in sys.modules; "
           "from test_mmrm import simulate; from skintrack.analysis.mmrm import fit_mmrm; "
           "fit_mmrm(simulate(1), ['W4', 'W8', 'W12'], 'placebo'); "
           "print(loaded, 'scipy.linalg' in sys.modules, os.environ['OPENBLAS_NUM_THREADS'])")
    for given, threads in ((None, "1"), ("2", "2")):
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
        env.update({"OPENBLAS_NUM_THREADS": given} if given else {})
        done = subprocess.run([sys.executable, "-c", fit], capture_output=True, text=True, env=env, check=True,
                              cwd=Path(__file__).parent)
        assert done.stdout.split() == ["False", "False", threads]

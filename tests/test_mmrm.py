"""The MMRM against R (nlme::gls + emmeans, Satterthwaite): estimates and SEs to 1e-6 relative, df within 1%,
on studies with missing visits, three arms, one post-baseline visit, baseline-by-visit, and other structures."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skintrack.analysis.mmrm import fit_mmrm

R_SCRIPT = Path(__file__).parent / "r" / "mmrm.R"
R_PACKAGES = ("r-base-core", "r-cran-nlme", "r-cran-emmeans", "r-cran-mass")


def ensure_r() -> str:
    """Rscript with nlme, emmeans and MASS, installed from Debian's packages when missing (as root)."""
    probe = "suppressMessages({library(nlme); library(emmeans); library(MASS)})"
    if shutil.which("Rscript") is None or subprocess.run(["Rscript", "-e", probe], capture_output=True).returncode:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                       + " ".join(R_PACKAGES), shell=True, check=True, capture_output=True)
    return shutil.which("Rscript")


@pytest.fixture(scope="session")
def rscript():
    exe = ensure_r()
    assert exe, "R is needed for the MMRM reference: apt-get install " + " ".join(R_PACKAGES)
    return exe


def r_mmrm(rscript, tmp_path, data, visits, arms, base_by_visit=False):
    data.to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "d.csv.arms").write_text("\n".join(arms) + "\n")
    (tmp_path / "d.csv.visits").write_text("\n".join(visits) + "\n")
    subprocess.run([rscript, str(R_SCRIPT), str(tmp_path / "d.csv"), str(tmp_path / "ls.csv"),
                    str(tmp_path / "diffs.csv"), "yes" if base_by_visit else "no"], check=True, capture_output=True)
    ls = pd.read_csv(tmp_path / "ls.csv").astype({"visit": str})
    diffs = pd.read_csv(tmp_path / "diffs.csv").astype({"visit": str})
    diffs["treatment"] = diffs["contrast"].str.split(" - ").str[0].str.strip("()")
    return ls, diffs


def simulate(seed, arms=("placebo", "active"), visits=("W4", "W8", "W12"), n=20, missing=0.15, effect=1.5):
    """SIMULATED trial data: correlated, heteroscedastic visits; a share of visits missing at random."""
    rng = np.random.default_rng(seed)
    t = len(visits)
    sd = np.linspace(2, 3, t)
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
                         "chg": 0.3 * (base - 50) + gain + e[j]})
    return pd.DataFrame(rows)


def compare(fit, ls, diffs):
    """The largest relative differences: estimates (against the SE where the estimate is near 0), SEs, df."""
    m = fit.lsmeans.merge(ls, on=["arm", "visit"], suffixes=("", "_r"))
    d = fit.diffs.merge(diffs, on=["visit", "treatment"], suffixes=("", "_r"))
    assert len(m) == len(fit.lsmeans) == len(ls) and len(d) == len(fit.diffs) == len(diffs)
    rel = lambda a, b, scale: float(np.max(np.abs(a - b) / scale))  # noqa: E731
    return {"estimate": max(rel(m["estimate"], m["emmean"], np.maximum(m["emmean"].abs(), m["SE"])),
                            rel(d["estimate"], d["estimate_r"], np.maximum(d["estimate_r"].abs(), d["SE"]))),
            "se": max(rel(m["std_error"], m["SE"], m["SE"]), rel(d["std_error"], d["SE"], d["SE"])),
            "df": max(rel(m["df"], m["df_ref"], m["df_ref"]), rel(d["df"], d["df_ref"], d["df_ref"])),
            "df_emmeans": max(rel(m["df"], m["df_emmeans"], m["df_emmeans"]),
                              rel(d["df"], d["df_emmeans"], d["df_emmeans"]))}


CASES = {
    "two arms, missing visits": dict(seed=1),
    "three arms, missing visits": dict(seed=2, arms=("placebo", "low", "high")),
    "one post-baseline visit": dict(seed=3, visits=("W12",), missing=0),
    "four visits, 30% missing": dict(seed=4, visits=("W2", "W4", "W8", "W12"), missing=0.3, n=25),
    "no effect, complete": dict(seed=5, missing=0, effect=0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mmrm_matches_r(case, rscript, tmp_path):
    spec = CASES[case]
    data = simulate(**spec)
    arms, visits = list(spec.get("arms", ("placebo", "active"))), list(spec.get("visits", ("W4", "W8", "W12")))
    fit = fit_mmrm(data, visits, control=arms[0])
    assert fit.covariance == "unstructured" and fit.converged
    worst = compare(fit, *r_mmrm(rscript, tmp_path, data, visits, arms))
    assert worst["estimate"] < 1e-6 and worst["se"] < 1e-6 and worst["df"] < 0.01, worst


def test_baseline_by_visit_matches_r(rscript, tmp_path):
    data = simulate(6)
    fit = fit_mmrm(data, ["W4", "W8", "W12"], control="placebo", base_by_visit=True)
    worst = compare(fit, *r_mmrm(rscript, tmp_path, data, ["W4", "W8", "W12"], ["placebo", "active"],
                                 base_by_visit=True))
    assert worst["estimate"] < 1e-6 and worst["se"] < 1e-6 and worst["df"] < 0.01, worst


def test_compound_symmetry_matches_a_random_intercept_model():
    """With compound symmetry (positive correlation) the MMRM is statsmodels' random-intercept REML fit.
    (R's corCompSymm and corAR1 fits abort or fail to invert under the tight optimiser settings the
    unstructured reference needs, so the fallback structures are checked against statsmodels.)"""
    import statsmodels.formula.api as smf

    data = simulate(7, missing=0.2)
    fit = fit_mmrm(data, ["W4", "W8", "W12"], control="placebo", structures=("compound_symmetry",))
    assert fit.covariance == "compound_symmetry"
    data = data.assign(visit=pd.Categorical(data["visit"], ["W4", "W8", "W12"]),
                       arm=pd.Categorical(data["arm"], ["placebo", "active"]))
    ref = smf.mixedlm("chg ~ base + arm * visit", data, groups=data["subject"]).fit(reml=True)
    ours = fit.coefficients.set_index("term")
    names = {term: term.replace("[T.", "[").replace("Intercept", "(Intercept)") for term in ref.params.index
             if term != "Group Var"}
    assert sorted(names.values()) == sorted(ours.index)
    for term, mine in names.items():
        assert abs(ref.params[term] - ours.loc[mine, "estimate"]) < 1e-5 * ours.loc[mine, "std_error"], term
        # statsmodels' SEs come from the observed information of all parameters at once (not (X'V^-1 X)^-1)
        assert abs(ref.bse[term] / ours.loc[mine, "std_error"] - 1) < 0.01, term


def test_a_structure_that_fails_falls_back_and_says_so():
    data = simulate(8, n=4, missing=0)  # 8 subjects, 3 visits: the unstructured information is singular
    data.loc[data["visit"] == "W8", "chg"] = data.loc[data["visit"] == "W4", "chg"].to_numpy() + 1.0
    fit = fit_mmrm(data, ["W4", "W8", "W12"], control="placebo")
    assert fit.tried and fit.tried[0] == "unstructured did not converge" and fit.covariance != "unstructured"

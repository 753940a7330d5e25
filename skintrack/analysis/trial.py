"""Trial statistics: paired tests against baseline, between-arm comparisons and mixed models.

The data come from `skintrack.analysis.trends` (DuckDB); the tests and models are scipy and statsmodels.

Example
-------
>>> pick_arms(["active", "placebo"])
('active', 'placebo')
"""
from __future__ import annotations

import re
import warnings

import pandas as pd

from ..tables.catalog import metric_info
from ..errors import UsageError
from .stats import adjust, paired, two_sample
from .trends import change_from_baseline, observations

CONTROL = re.compile(r"placebo|control|vehicle|sham|untreated", re.I)
PAIRED_TESTS = ("paired_t", "wilcoxon")
ARM_TESTS = ("welch", "mannwhitney", "ancova")


def check_test(test: str, allowed: tuple) -> str:
    """`test` if it is one of `allowed`, else a `UsageError` naming them."""
    if test not in allowed:
        raise UsageError(f"test {test!r} does not fit this comparison: use {', '.join(allowed)}")
    return test


def pick_arms(arms, treatment=None, control=None) -> tuple[str, str]:
    """(treatment, control) among two arms; the control is the one named like placebo/control/vehicle."""
    arms = sorted(a for a in arms if a is not None and a == a)
    if treatment and control:
        missing = {treatment, control} - set(arms)
        if missing:
            raise UsageError(f"no arm named {', '.join(sorted(missing))} (arms: {', '.join(arms)})")
        return treatment, control
    if len(arms) != 2:
        raise UsageError(f"arms are {arms or 'missing'}; name the treatment and control arms to compare")
    control = control or next((a for a in arms if CONTROL.search(a)), arms[1])
    return next(a for a in arms if a != control), control


def compare(study, metrics, baseline: str, followup: str, test: str = "paired_t",
            exclude_flagged: bool = False) -> pd.DataFrame:
    """One row per metric: the paired change from `baseline` to `followup` visit, over subjects with both.

    Columns: metric, n, mean_diff, ci_low, ci_high (t interval of the mean difference), statistic, p,
    dz (Cohen's d for paired data), p_holm, p_bh (adjusted across the metrics).
    """
    check_test(test, PAIRED_TESTS)
    rows = []
    for key in [metrics] if isinstance(metrics, str) else metrics:
        sql, params = observations(key, exclude_flagged)
        pairs = study.sql(f"""WITH {sql}
            SELECT b.value AS before, f.value AS after FROM tl b JOIN tl f USING (subject_id)
            WHERE b.visit = $v0 AND f.visit = $v1 ORDER BY subject_id""", {**params, "v0": baseline, "v1": followup})
        rows.append({"metric": key, **paired(pairs["before"].to_numpy(), pairs["after"].to_numpy(), test)})
    df = pd.DataFrame(rows, columns=["metric", "n", "mean_diff", "ci_low", "ci_high", "statistic", "p", "dz"])
    df["p_holm"], df["p_bh"] = adjust(df["p"])
    return df


def _arm_changes(study, key, visit, exclude_flagged):
    ch = change_from_baseline(study, key, exclude_flagged=exclude_flagged)
    if "arm" not in study.columns("subjects"):
        raise UsageError("the study has no `arm` (give a subjects CSV with an arm column)")
    arms = study.sql("SELECT subject_id, arm FROM subjects")
    ch = ch.merge(arms, on="subject_id", how="left")
    return ch[ch["visit"] == visit] if visit is not None else ch


def compare_arms(study, key: str, visit: str, test: str = "welch", treatment=None, control=None,
                 exclude_flagged: bool = False) -> pd.DataFrame:
    """Treatment against control on the change from baseline at `visit`.

    "welch" (Welch's t) and "mannwhitney" compare the changes; "ancova" fits change ~ arm + baseline
    (statsmodels OLS). Columns: metric, visit, test, treatment, control, n_treatment, n_control,
    mean_treatment, mean_control, diff (treatment - control; adjusted for baseline with ancova), ci_low,
    ci_high, statistic, p.
    """
    check_test(test, ARM_TESTS)
    ch = _arm_changes(study, key, visit, exclude_flagged)
    treat, ctrl = pick_arms(ch["arm"].unique(), treatment, control)
    a, b = ch.loc[ch["arm"] == treat, "delta"].to_numpy(), ch.loc[ch["arm"] == ctrl, "delta"].to_numpy()
    if test == "ancova":
        import statsmodels.formula.api as smf

        data = ch[ch["arm"].isin([treat, ctrl])].assign(treated=lambda d: (d["arm"] == treat).astype(float))
        fit = smf.ols("delta ~ treated + baseline_value", data=data).fit()
        lo, hi = fit.conf_int().loc["treated"]
        res = {"n_a": len(a), "n_b": len(b), "mean_a": a.mean(), "mean_b": b.mean(), "diff": fit.params["treated"],
               "ci_low": lo, "ci_high": hi, "statistic": fit.tvalues["treated"], "p": fit.pvalues["treated"]}
    else:
        res = two_sample(a, b, test)
    return pd.DataFrame([{"metric": key, "visit": visit, "test": test, "treatment": treat, "control": ctrl,
                          "n_treatment": res["n_a"], "n_control": res["n_b"], "mean_treatment": res["mean_a"],
                          "mean_control": res["mean_b"], "diff": res["diff"], "ci_low": res["ci_low"],
                          "ci_high": res["ci_high"], "statistic": res["statistic"], "p": res["p"]}])


def mixed_model(study, key: str, treatment=None, control=None, exclude_flagged: bool = False) -> pd.DataFrame:
    """MixedLM of the change from baseline on treatment, visit and treatment x visit, with a random
    intercept per subject (REML). Returns term, estimate, std_error, z, p, ci_low, ci_high; the fit's
    warnings (e.g. convergence) are in ``.attrs["warnings"]``.
    """
    import statsmodels.formula.api as smf

    ch = _arm_changes(study, key, None, exclude_flagged)
    treat, ctrl = pick_arms(ch["arm"].unique(), treatment, control)
    order = study.visits
    post = ch[ch["arm"].isin([treat, ctrl]) & ch["delta"].notna()].copy()
    post = post[~post["is_baseline"].astype(bool)]
    if post["subject_id"].nunique() < 3 or post["visit"].nunique() < 1:
        raise UsageError(f"{key}: too few post-baseline observations for a mixed model")
    post["treated"] = (post["arm"] == treat).astype(float)
    levels = [v for v in order if v in set(post["visit"])]
    post["visit"] = pd.Categorical(post["visit"], categories=levels)
    formula = "delta ~ treated * C(visit)" if len(levels) > 1 else "delta ~ treated"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = smf.mixedlm(formula, post, groups=post["subject_id"]).fit(reml=True)
    ci = fit.conf_int()
    terms = [t for t in fit.params.index if t != "Group Var"]
    out = pd.DataFrame({"term": terms, "estimate": fit.params[terms].to_numpy(), "std_error": fit.bse[terms].to_numpy(),
                        "z": fit.tvalues[terms].to_numpy(), "p": fit.pvalues[terms].to_numpy(),
                        "ci_low": ci.loc[terms, 0].to_numpy(), "ci_high": ci.loc[terms, 1].to_numpy()})
    out.attrs.update(metric=key, treatment=treat, control=ctrl, n_subjects=int(post["subject_id"].nunique()),
                     n_obs=len(post), converged=bool(fit.converged), random_intercept_var=float(fit.cov_re.iloc[0, 0]),
                     warnings=[str(w.message) for w in caught], better=metric_info(key)["better"])
    return out

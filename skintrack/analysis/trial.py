"""Trial statistics: paired changes within arms, arms against the control, the MMRM, and the plan's
endpoints tested in order with its multiplicity strategy.

The data come from `skintrack.analysis.trends` (DuckDB) under the plan's rules (`selection`); the tests
are scipy and statsmodels, the MMRM is `skintrack.analysis.mmrm`, the multiplicity
`skintrack.analysis.multiplicity`.

Example
-------
>>> check_test("welch", ARM_TESTS)
'welch'
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import NotApplicable, UsageError, finite
from ..tables.catalog import metric_info
from . import endpoints as ep
from . import multiplicity as mult
from .covariance import FALLBACK
from .instrument import generations_used
from .mmrm import MMRMResult, fit_mmrm
from .repeatability import repeatability
from .selection import observations_sql
from .stats import adjust, paired, two_sample
from .trends import change_from_baseline

PAIRED_TESTS = ("paired_t", "wilcoxon")
ARM_TESTS = ("welch", "mannwhitney", "ancova")
MODELS = {"count": "negative_binomial", "grade": "proportional_odds", "presence": "logistic",
          "continuous": "mmrm"}
ENDPOINT_COLUMNS = ["order", "role", "metric", "visit", "treatment", "control", "model", "estimate", "ci_low",
                    "ci_high", "p", "p_adjusted", "decision", "reason", "method", "better"]


def check_test(test: str, allowed: tuple) -> str:
    """`test` if it is one of `allowed`, else a `UsageError` naming them."""
    if test not in allowed:
        raise UsageError(f"test {test!r} does not fit this comparison: use {', '.join(allowed)}")
    return test


def _arms(study) -> pd.DataFrame | None:
    return study.sql("SELECT subject_id, arm FROM subjects") if "arm" in study.columns("subjects") else None


def compare(study, metrics, baseline: str, followup: str, test: str = "paired_t",
            exclude_flagged: bool | None = None) -> pd.DataFrame:
    """The paired change from `baseline` to `followup` visit over subjects with both, per metric and, when
    the study has arms, per arm (arms are never pooled).

    Columns: metric, arm, n, mean_diff, ci_low, ci_high (t interval of the mean difference), statistic, p,
    dz (Cohen's d for paired data), p_holm, p_bh (adjusted across the metrics, within each arm).
    """
    check_test(test, PAIRED_TESTS)
    arms = _arms(study)
    r = study.rules(exclude_flagged)
    rows = []
    for key in study.metric_list(metrics):
        sql, params = observations_sql(key, r)
        pairs = study.sql(f"""WITH {sql}
            SELECT b.subject_id, b.value AS before, f.value AS after FROM tl b JOIN tl f USING (subject_id)
            WHERE b.visit = $v0 AND f.visit = $v1 ORDER BY subject_id""", {**params, "v0": baseline, "v1": followup})
        groups = [(None, pairs)] if arms is None else list(pairs.merge(arms, on="subject_id").groupby("arm"))
        for arm, g in groups:
            rows.append({"metric": key, "arm": arm, **paired(g["before"].to_numpy(), g["after"].to_numpy(), test)})
    df = pd.DataFrame(rows, columns=["metric", "arm", "n", "mean_diff", "ci_low", "ci_high", "statistic", "p", "dz"])
    df["p_holm"], df["p_bh"] = np.nan, np.nan
    for _, idx in df.groupby("arm", dropna=False).groups.items():
        df.loc[idx, "p_holm"], df.loc[idx, "p_bh"] = adjust(df.loc[idx, "p"])
    return df if arms is not None else df.drop(columns="arm")


def arm_changes(study, key: str, exclude_flagged: bool | None = None, rules=None) -> pd.DataFrame:
    """The post-baseline changes from the plan's baseline with each subject's arm (baseline rows left
    out), under the plan's rules (or `rules`); the subjects without a usable baseline are in
    ``.attrs["excluded"]``."""
    arms = _arms(study)
    if arms is None:
        raise UsageError("the study has no `arm` (give a subjects CSV with an arm column)")
    ch = change_from_baseline(study, key, rules or study.rules(exclude_flagged))
    out = ch[~ch["is_baseline"].astype(bool)].merge(arms, on="subject_id", how="left")
    out.attrs = dict(ch.attrs)
    out.attrs["baseline_only"] = sorted(set(ch["subject_id"]) - set(out["subject_id"]))
    return out


def _arm_pair(study, treatment, control) -> tuple[list, str]:
    plan = study.plan
    control = control or plan.control
    treatments = [treatment] if treatment else list(plan.treatments)
    held = _arms(study)
    arms = set(held["arm"].dropna()) if held is not None else set()
    if control is None:
        raise NotApplicable("arms are compared against a control, and this study has " + (
            f"none named (arms: {', '.join(sorted(arms))}; name it in plan.toml: control = ...)" if arms else
            "no arms (a subjects CSV with an arm column gives them)"))
    for arm in [control, *treatments]:
        if arm not in arms:
            raise UsageError(f"no arm named {arm!r} (arms: {', '.join(sorted(arms)) or 'none'})")
    if not treatments:
        raise UsageError(f"no treatment arm to compare with the control {control!r}")
    return treatments, control


def compare_arms(study, key: str, visit: str, test: str = "welch", treatment=None, control=None,
                 exclude_flagged: bool | None = None) -> pd.DataFrame:
    """Each treatment against the control (the plan's, unless named) on the change from baseline at `visit`.

    "welch" (Welch's t) and "mannwhitney" compare the changes; "ancova" fits change ~ arm + baseline
    (statsmodels OLS) on the two arms. One row per treatment: metric, visit, test, treatment, control,
    n_treatment, n_control, mean_treatment, mean_control, diff (treatment - control; adjusted for baseline
    with ancova), ci_low, ci_high, statistic, p.
    """
    check_test(test, ARM_TESTS)
    treatments, ctrl = _arm_pair(study, treatment, control)
    ch = arm_changes(study, key, exclude_flagged)
    ch = ch[ch["visit"] == visit]
    rows = []
    for treat in treatments:
        a, b = ch.loc[ch["arm"] == treat, "delta"].to_numpy(), ch.loc[ch["arm"] == ctrl, "delta"].to_numpy()
        res = ancova(ch, treat, ctrl) if test == "ancova" else two_sample(a, b, test)
        rows.append({"metric": key, "visit": visit, "test": test, "treatment": treat, "control": ctrl,
                     "n_treatment": res["n_a"], "n_control": res["n_b"], "mean_treatment": res["mean_a"],
                     "mean_control": res["mean_b"], "diff": res["diff"], "ci_low": res["ci_low"],
                     "ci_high": res["ci_high"], "statistic": res["statistic"], "p": res["p"]})
    out = pd.DataFrame(rows)
    out.attrs["excluded"] = ch.attrs.get("excluded")
    return out


def ancova(changes: pd.DataFrame, treatment: str, control: str) -> dict:
    """change ~ treated + baseline (statsmodels OLS) on the rows of two arms (columns arm, delta,
    baseline_value): n_a, n_b, mean_a, mean_b, diff (baseline-adjusted), ci_low, ci_high, statistic, p."""
    import statsmodels.formula.api as smf

    data = changes[changes["arm"].isin([treatment, control])].assign(
        treated=lambda d: (d["arm"] == treatment).astype(float))
    a, b = data.loc[data["arm"] == treatment, "delta"].to_numpy(), data.loc[data["arm"] == control, "delta"].to_numpy()
    res = {"n_a": len(a), "n_b": len(b), "mean_a": a.mean() if len(a) else math.nan,
           "mean_b": b.mean() if len(b) else math.nan, "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "statistic": math.nan, "p": math.nan}
    distinct = data["baseline_value"].nunique()
    if len(a) < 2 or len(b) < 2 or (distinct == 2 and data.groupby("treated")["baseline_value"].nunique().max() == 1):
        return res  # too few, or each arm's baseline one value of its own: the arms and the baseline are one column
    # a baseline every subject shares adjusts nothing: change on arm alone (the pooled-variance t-test), without a
    # rank-deficient design
    fit = smf.ols("delta ~ treated" + (" + baseline_value" if distinct > 1 else ""), data=data).fit()
    lo, hi = fit.conf_int().loc["treated"]
    return {**res, "diff": fit.params["treated"], "ci_low": lo, "ci_high": hi, "statistic": fit.tvalues["treated"],
            "p": fit.pvalues["treated"]}


def mmrm_data(ch: pd.DataFrame) -> pd.DataFrame:
    """The MMRM's rows (subject, arm, visit, base, chg, days) from `arm_changes`."""
    return pd.DataFrame({"subject": ch["subject_id"], "arm": ch["arm"], "visit": ch["visit"],
                         "base": ch["baseline_value"], "chg": ch["delta"], "days": ch["days"]})


def mmrm(study, key: str, treatments=None, control=None, base_by_visit: bool = False,
         exclude_flagged: bool | None = None, rules=None) -> MMRMResult:
    """The MMRM of the change from the plan's baseline (see `skintrack.analysis.mmrm`) over the plan's
    post-baseline visits, with the plan's covariance, degrees of freedom and variance; QC-flagged captures
    as the plan says unless `exclude_flagged` is given. Subjects left out are listed with why."""
    plan = study.plan
    chosen, ctrl = _arm_pair(study, None, control)
    treatments = list(treatments) if treatments else chosen
    ch = arm_changes(study, key, exclude_flagged, rules)
    visits = [v for v in plan.schedule if v != plan.baseline]
    structures = [plan.covariance] + [s for s in FALLBACK if s != plan.covariance]
    fit = fit_mmrm(mmrm_data(ch), visits, ctrl, treatments, base_by_visit=base_by_visit, structures=structures,
                   df=plan.df, variance=plan.variance, metric=key)
    left = list(ch.attrs["excluded"]) + [{"subject_id": s, "reason": "no post-baseline value"}
                                         for s in ch.attrs["baseline_only"]]
    fit.excluded = pd.DataFrame(left, columns=["subject_id", "reason"]).sort_values("subject_id", ignore_index=True)
    fit.assumed = list(plan.assumed)
    flagged = plan.qc == "exclude" if exclude_flagged is None else exclude_flagged
    fit.qc = "QC-flagged captures excluded" if flagged else "QC-flagged captures included"
    return fit


def model_of(plan, key: str) -> str | None:
    """The model that compares `key` between arms: the plan's, else its type's (None for a type without an order)."""
    return plan.models.get(key) or MODELS.get(metric_info(key)["type"])


def endpoint(study, key: str, visit: str | None = None, treatment=None, control=None, model: str | None = None,
             margin: float | None = None, exclude_flagged: bool | None = None) -> pd.DataFrame:
    """`key` at `visit` (default: the plan's last visit) for each treatment against the control, by the model
    its type calls for (the plan's `models` or the catalog's type): negative binomial rate ratio for counts,
    proportional-odds odds ratio for grades, logistic odds ratio for flags (Firth's under separation), the
    MMRM difference for continuous metrics (with the Hodges-Lehmann shift, Hedges' g and, given a `margin`,
    equivalence by the MMRM's 90% interval, the two one-sided tests). One row per treatment: metric, visit,
    treatment, control, model, estimate, ci_low, ci_high, p, n_treatment, n_control, method, and the model's
    extras. ``.attrs["fit"]`` holds the MMRM."""
    plan = study.plan
    visit = study.check_followup(visit or plan.schedule[-1])
    kind = metric_info(key)["type"]
    model = model or model_of(plan, key)
    if model is None:
        raise UsageError(f"{key} is a {kind} without an order: no model compares it between arms (describe it "
                         "with cohort)")
    treatments, ctrl = _arm_pair(study, treatment, control)
    ch = arm_changes(study, key, exclude_flagged)
    at = ch[ch["visit"] == visit].rename(columns={"baseline_value": "base"})
    if model != "mmrm" and ch.empty:  # never measured at baseline (a questionnaire after use): the values as they are
        tl = study.timeline(key, exclude_flagged).merge(_arms(study), on="subject_id", how="left")
        at = tl[tl["visit"] == visit].assign(base=np.nan)
    fit = study.mmrm(key, treatments, ctrl, exclude_flagged=exclude_flagged) if model == "mmrm" else None
    rows = []
    for treat in treatments:
        if model == "mmrm":
            d = fit.diff(visit, treat)
            a, b = at.loc[at["arm"] == treat, "delta"], at.loc[at["arm"] == ctrl, "delta"]
            hl, g = ep.hodges_lehmann(a, b), ep.hedges_g(a, b)
            res = {"estimate": d["estimate"], "ci_low": d["ci_low"], "ci_high": d["ci_high"], "p": d["p"],
                   "std_error": d["std_error"], "df": d["df"], "n_treatment": len(a), "n_control": len(b),
                   "method": fit.method, "hl_shift": hl["shift"], "hl_ci_low": hl["ci_low"],
                   "hl_ci_high": hl["ci_high"], "hedges_g": g["g"], "g_ci_low": g["ci_low"], "g_ci_high": g["ci_high"]}
            if margin is not None:
                res.update(ep.tost_from_interval(fit, visit, treat, margin))
        else:
            fn = {"negative_binomial": ep.negative_binomial, "proportional_odds": ep.proportional_odds,
                  "logistic": ep.logistic}.get(model)
            if fn is None:
                raise UsageError(f"unknown model {model!r}: use mmrm, negative_binomial, proportional_odds, logistic")
            res = fn(at, treat, ctrl)
        rows.append({"metric": key, "visit": visit, "treatment": treat, "control": ctrl, "model": model, **res})
    out = pd.DataFrame(rows)
    out.attrs["excluded"] = ch.attrs.get("excluded")
    out.attrs["fit"] = fit
    return out


def _family(rows: list, fit, plan) -> None:
    """Adjust one endpoint's comparisons (one per treatment arm) by the plan's rule across arms, in place:
    p_family, and for Dunnett simultaneous 95% intervals (`ci_simultaneous`; 95% as every other interval,
    whatever the plan's alpha).

    Dunnett needs the MMRM's joint covariance of the comparisons (a model fitted pair by pair has none) and at
    least one degree of freedom: below it the multivariate t's probabilities are not computed reliably (Genz
    and Bretz's method misses by 0.005 at 0.8 df; R's mvtnorm takes whole df only). Holm's step-down, which
    needs neither, adjusts those families instead, and the method says why."""
    testable = [r for r in rows if np.isfinite(r["p"])]
    rule = plan.arm_comparisons if len(rows) > 1 else "none"
    df = min((r.get("df", math.nan) for r in testable), default=math.nan)
    joint = rule == "dunnett" and fit is not None and len(testable) > 1
    if joint and df >= 1:
        vectors = [fit.contrast_vector(r["visit"], r["treatment"]) for r in testable]
        cov = fit.covariance_of(vectors)
        sd = np.sqrt(np.diag(cov))
        corr = cov / np.outer(sd, sd)
        t = np.array([r["estimate"] / s for r, s in zip(testable, sd)])
        adjusted = mult.dunnett(t, corr, df)
        q = mult.dunnett_quantile(0.95, corr, df)
        for r, p, s in zip(testable, adjusted, sd):
            r.update(p_family=p, ci_low=r["estimate"] - q * s, ci_high=r["estimate"] + q * s, ci_simultaneous=True,
                     method=r["method"] + f"; Dunnett single-step over {len(testable)} arms ({df:.1f} df), "
                                          "simultaneous 95% intervals")
    elif rule in ("dunnett", "holm") and len(testable) > 1:
        why = f" (Dunnett needs at least 1 df: {df:.2f})" if joint else ""
        for r, p in zip(testable, mult.holm([r["p"] for r in testable])):
            r.update(p_family=p, method=r["method"] + f"; Holm over {len(testable)} arms{why}")
    elif rule == "dose_order" and len(rows) > 1:
        adjusted, _ = mult.dose_order([r["p"] for r in rows], plan.alpha)
        for r, p in zip(rows, adjusted):
            r.update(p_family=p, method=r["method"] + "; arms tested in dose order")
    for r in rows:
        r.setdefault("p_family", r["p"])
        r.setdefault("ci_simultaneous", False)


def endpoints(study, exclude_flagged: bool | None = None) -> pd.DataFrame:
    """The plan's primary and key secondary endpoints in testing order, each treatment against the control,
    with the plan's multiplicity strategy applied (see `skintrack.analysis.multiplicity`).

    An endpoint that cannot be estimated (separation a model cannot take, every subject with the same grade,
    a model that does not converge) is a row that says why, is never rejected, and stops no other endpoint.
    Columns: order, role, metric, visit, treatment, control, model, estimate (a difference for the MMRM, a
    ratio otherwise), ci_low, ci_high, p, p_adjusted, decision (significant, not significant, not tested,
    not estimable), reason, method, better, and ci_simultaneous (the interval is Dunnett's, simultaneous over the
    treatment arms; every interval is 95%). ``.attrs`` holds the strategy, alpha, the testing order in words,
    what the plan assumed and the MMRM fits by metric.
    """
    plan = study.plan
    treatments, ctrl = _arm_pair(study, None, None)
    families, fits = [], {}
    for order, e in enumerate(plan.endpoints, 1):
        role = "primary" if order == 1 and plan.primary else "secondary"
        base = {"order": order, "role": role, "metric": e.metric, "visit": e.visit, "control": ctrl,
                "generations": ", ".join(generations_used(study, e.metric, [plan.baseline, e.visit],
                                                          study.rules(exclude_flagged)))}
        try:
            res = endpoint(study, e.metric, e.visit, exclude_flagged=exclude_flagged)
            fits[e.metric] = res.attrs.get("fit")
            rows = [{**base, **r, "reason": ""} for r in res.to_dict("records")]
            _family(rows, res.attrs.get("fit"), plan)
        except UsageError as err:
            rows = [{**base, "treatment": t, "model": model_of(plan, e.metric) or "", "estimate": math.nan,
                     "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "p_family": math.nan, "reason": str(err),
                     "method": "", "n_treatment": math.nan, "n_control": math.nan, "ci_simultaneous": False}
                    for t in treatments]
        families.append(rows)
    _decide(families, plan)
    df = pd.DataFrame([r for f in families for r in f])
    df = df.reindex(columns=ENDPOINT_COLUMNS + [c for c in df.columns if c not in ENDPOINT_COLUMNS and c != "p_family"])
    df["better"] = [metric_info(m)["better"] for m in df["metric"]]
    df.attrs.update(strategy=plan.multiplicity, alpha=plan.alpha, assumed=list(plan.assumed),
                    arm_comparisons=plan.arm_comparisons if len(treatments) > 1 else "none",
                    testing_order=testing_order(plan, len(treatments)), fits=fits)
    return df


def _decide(families: list, plan) -> None:
    """Decisions and adjusted p-values over the families, in place (see the module docstring)."""
    if plan.multiplicity == "holm":
        flat = [r for f in families for r in f]
        for r, p in zip(flat, mult.holm([r["p"] for r in flat])):
            r["p_adjusted"] = p
            r["decision"] = "not estimable" if r["reason"] else "significant" if p < plan.alpha else "not significant"
        return
    open_gate, running = True, 0.0
    for family in families:
        for r in family:
            if r["reason"]:
                r.update(p_adjusted=math.nan, decision="not estimable")
                continue
            running_here = max(running, r["p_family"]) if np.isfinite(r["p_family"]) else math.nan
            r["p_adjusted"] = running_here
            r["decision"] = ("significant" if running_here < plan.alpha else "not significant") if open_gate \
                else "not tested"
        rejected = all(r["decision"] == "significant" for r in family)
        running = max([running] + [r["p_family"] for r in family if np.isfinite(r["p_family"])])
        open_gate = open_gate and rejected


def testing_order(plan, arms: int) -> str:
    """The plan's testing strategy in a sentence (for the report and the endpoints output)."""
    names = [f"{e.metric} at {e.visit}" for e in plan.endpoints]
    within = {"dunnett": "Dunnett's single-step adjustment over the treatment arms",
              "holm": "Holm's adjustment over the treatment arms",
              "dose_order": "the treatment arms in dose order (" + ", then ".join(plan.treatments) + ")",
              "none": "no adjustment over the arms"}[plan.arm_comparisons if arms > 1 else "none"]
    if plan.multiplicity == "holm":
        return f"Holm's adjustment over every endpoint and arm ({'; '.join(names)}), two-sided alpha {plan.alpha:g}"
    return (f"a fixed sequence at two-sided alpha {plan.alpha:g}: " + " -> ".join(names)
            + (f", each endpoint a family with {within}" if arms > 1 else "")
            + "; an endpoint is tested only when every comparison before it was significant")


def responders_between(study, key: str, visit: str | None = None, threshold: float | None = None,
                       treatment=None, control=None, exclude_flagged: bool | None = None) -> pd.DataFrame:
    """Responders at `visit` (improved by at least `threshold`, default the plan's; "mdc" takes the
    metric's MDC95 from the repeat captures) for each treatment against the control: risk difference with
    Newcombe's interval, odds ratio, Fisher's p."""

    plan = study.plan
    visit = study.check_followup(visit or plan.schedule[-1])
    threshold = plan.responders.get(key) if threshold is None else threshold
    if threshold is None:
        raise UsageError(f"no responder threshold for {key}: give one, or set it in the plan")
    if threshold == "mdc":
        table = repeatability(study, [key])
        if table.empty:
            raise UsageError(f"no repeat captures to measure {key}'s MDC95 from")
        threshold = float(table["mdc95"].iloc[0])
    threshold = finite(threshold, f"the responder threshold of {key}")
    better = metric_info(key)["better"]
    if better not in ("higher", "lower"):
        raise UsageError(f"{key} has no better-direction, so no one can respond on it")
    treatments, ctrl = _arm_pair(study, treatment, control)
    ch = arm_changes(study, key, exclude_flagged)
    at = ch[ch["visit"] == visit].assign(gain=lambda d: d["delta"] if better == "higher" else -d["delta"])
    count = lambda arm: (int((at.loc[at["arm"] == arm, "gain"] >= threshold).sum()),  # noqa: E731
                         int((at["arm"] == arm).sum()))
    empty = [arm for arm in (ctrl, *treatments) if count(arm)[1] == 0]
    if empty:
        raise UsageError(f"{key}: no subject of {' or '.join(empty)} has a change from baseline at {visit} to count "
                         "as a responder or not")
    rows = [{"metric": key, "visit": visit, "threshold": threshold, "treatment": t, "control": ctrl,
             **ep.responder_difference(*count(t), *count(ctrl))} for t in treatments]
    return pd.DataFrame(rows)

"""The sensitivity analyses of the primary endpoint a SAP lists, in one table.

* the primary analysis itself (the MMRM as planned: missing at random);
* ``qc``: the MMRM with QC-flagged captures handled the other way round;
* ``mi``, ``j2r``, ``cr``: multiple imputation under MAR, jump to reference and copy reference
  (`skintrack.analysis.imputation`), each analysed by ANCOVA at the endpoint's visit and pooled;
* ``tipping``: the delta-adjusted tipping point, the shift of the treated subjects' imputed values against
  the treatment that overturns the MAR conclusion;
* ``generation``, ``bridge``: when the primary endpoint's values come from more than one API generation
  (`skintrack.analysis.instrument`), the MMRM restricted to the generation that measured most of them,
  and the MMRM with every other generation's values moved onto that one's scale by the bridge's offsets
  (`Study.bridge`); not run when one generation measured everything.

Which of them run, how many imputations and the seed come from the plan's ``[sensitivity]`` table
(default: every one, 100 imputations, seed 20241108).

Each analysis concludes as the primary analysis would with its numbers: ``p_adjusted`` is its p adjusted
as the plan tests the primary comparison (over the treatment arms by the plan's rule, Dunnett's from the
analysis' own MMRM or Holm's where there is no joint model; under Holm's strategy, over every endpoint with
the other endpoints' p-values), and ``decision`` compares it with alpha. The tipping point is the shift at
which that decision flips. Intervals are 95%, unadjusted.

Example
-------
>>> from skintrack.demo import demo_study
>>> table = sensitivity(demo_study(), methods=("qc",))
>>> table["analysis"].tolist()
['primary: MMRM (missing at random)', 'QC-flagged captures included']
"""
from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from ..errors import NotApplicable, UsageError
from ..tables.catalog import metric_info
from ..tables.plan import SENSITIVITY, sensitivity_problems
from . import imputation
from .selection import records_sql
from .stats import decimals
from .trial import _arm_pair, _decide, _family, arm_changes, mmrm, mmrm_data, model_of

DEFAULTS = {"methods": list(SENSITIVITY), "imputations": 100, "seed": 20241108}
COLUMNS = ["analysis", "treatment", "control", "visit", "estimate", "std_error", "df", "ci_low", "ci_high", "p",
           "p_adjusted", "decision", "note"]


def sensitivity(study, methods=None, imputations: int | None = None, seed: int | None = None) -> pd.DataFrame:
    """One row per analysis and treatment arm of the plan's primary endpoint (see the module docstring)."""
    plan = study.plan
    if plan.primary is None:
        raise NotApplicable("the plan has no primary endpoint to test the sensitivity of")
    settings = {**DEFAULTS, **plan.sensitivity}
    methods = list(methods or settings["methods"])
    m = settings["imputations"] if imputations is None else imputations
    seed = settings["seed"] if seed is None else seed
    if problems := sensitivity_problems({"methods": methods, "imputations": m, "seed": seed}):
        raise UsageError("; ".join(problems))
    m, seed = int(m), int(seed)
    key, visit = plan.primary.metric, study.check_followup(plan.primary.visit)  # held yet, and after the baseline
    model = model_of(plan, key)
    if model != "mmrm":  # its rows would be another model's numbers than the primary endpoint's
        raise NotApplicable(f"{key}: the primary endpoint is analysed by {(model or 'no model').replace('_', ' ')} "
                            f"(a {metric_info(key)['type']}); the sensitivity analyses (MMRM, multiple imputation, "
                            "tipping point) are for an endpoint the MMRM analyses")
    treatments, control = _arm_pair(study, None, None)
    decide = _decider(study, plan)
    fit = study.mmrm(key)
    rows = decide([_row("primary: MMRM (missing at random)", fit.diff(visit, t), fit.method) for t in treatments], fit)
    if "qc" in methods:
        other = study.mmrm(key, exclude_flagged=plan.qc != "exclude")
        rows += decide([_row(other.qc, other.diff(visit, t), other.method) for t in treatments], other)
    rows += _instrument_rows(study, key, visit, treatments, decide, methods)
    wanted = [meth for meth in ("mi", "j2r", "cr") if meth in methods]
    if wanted or "tipping" in methods:
        ch = arm_changes(study, key)
        base = study.change_from_baseline(key)
        base = base[base["is_baseline"].astype(bool)].merge(study.sql("SELECT subject_id, arm FROM subjects"),
                                                            on="subject_id")
        people = pd.DataFrame({"subject": base["subject_id"], "arm": base["arm"], "base": base["baseline_value"]})
        held = set(ch["visit"])
        visits = [v for v in plan.schedule if v != plan.baseline and v in held]  # a visit nobody attended: none
        kinds = {"mi": "mar", "j2r": "j2r", "cr": "cr"}
        try:
            imp = imputation.impute(mmrm_data(ch), people, visits, visit, control, treatments, m=m, seed=seed,
                                    methods=sorted({kinds[w] for w in wanted} | {"mar"}))
        except UsageError as e:  # not estimable: said in each of its rows, the other analyses stand
            names = [imputation.NAMES[kinds[w]] for w in wanted] + (["tipping point (MAR + delta)"]
                                                                    if "tipping" in methods else [])
            rows += [{**_empty(t, control, visit), "analysis": name, "note": f"not estimable: {e}"}
                     for name in names for t in treatments]
            return _table(rows, key, visit, m, seed)
        note = f"{m} imputations (seed {seed}), ANCOVA at {visit}, Rubin's rules"
        for meth in wanted:
            pooled = imp.ancova(kinds[meth])
            rows += decide([_row(imputation.NAMES[kinds[meth]], {**r, "visit": visit}, note)
                            for r in pooled.to_dict("records")])
        if "tipping" in methods:
            better = metric_info(key)["better"]
            direction = -1.0 if better == "higher" else 1.0
            span = 4 * abs(fit.diff(visit, treatments[0])["estimate"]) + 10 * fit.diff(visit, treatments[0])["std_error"]

            def adjusted(pooled: list) -> list:  # the p-values the decision compares with alpha
                return [r["p_adjusted"] for r in decide([_row("", {**r, "visit": visit}, "") for r in pooled])]

            for t in treatments:
                tip = imputation.tipping_point(imp, t, plan.alpha, direction, span, adjusted)
                shift = direction * tip["delta"]
                text = tip["note"] or (f"shifting the treated subjects' imputed changes at {visit} by "
                                       f"{shift:+.{decimals([shift])}f} {metric_info(key)['unit']} flips the "
                                       "conclusion")
                rows.append({"analysis": "tipping point (MAR + delta)", "treatment": t, "control": control,
                             "visit": visit, "estimate": shift, "std_error": math.nan,
                             "df": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": tip["p_at_zero"],
                             "p_adjusted": tip["adjusted_at_zero"], "decision": "", "note": text})
    return _table(rows, key, visit, m, seed)


def _table(rows, key, visit, m, seed) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.attrs.update(metric=key, visit=visit, imputations=m, seed=seed)
    return out


def _decider(study, plan):
    """A function giving rows of one analysis (one per treatment; Dunnett's needs the analysis' MMRM `fit`)
    their `p_adjusted` and `decision` as the plan decides the primary comparison (see the module docstring)."""
    others = []
    if plan.multiplicity == "holm":  # the primary's adjusted p depends on every other endpoint's p
        ends = study.endpoints()
        others = [[{"p": r.p, "p_family": r.p, "reason": r.reason}] for r in ends[ends["order"] > 1].itertuples()]

    def decide(rows: list, fit=None) -> list:
        family = [{**r, "method": "", "reason": "" if math.isfinite(r["p"]) else "not estimable"} for r in rows]
        _family(family, fit, plan)
        _decide([family] + [[dict(r) for r in f] for f in others], plan)
        return [{**r, "p_adjusted": f["p_adjusted"], "decision": f["decision"]} for r, f in zip(rows, family)]

    return decide


def _instrument_rows(study, key, visit, treatments, decide, methods) -> list:
    """The ``generation`` and ``bridge`` rows (see the module docstring); none when one generation measured
    the primary endpoint's values."""
    if not {"generation", "bridge"} & set(methods):
        return []
    base = study.rules()
    sql, params = records_sql(key, base)
    counts = study.sql(f"""WITH {sql} SELECT a.api_generation AS g, count(*) AS n
                           FROM recs JOIN analyses_raw a USING (analysis_id) WHERE recs.reason IS NULL
                           AND recs.avisit IN ($baseline, $visit) AND a.api_generation <> 'unknown' GROUP BY ALL
                           ORDER BY n DESC, g DESC""", {**params, "baseline": study.plan.baseline, "visit": visit})
    if len(counts) < 2:
        return []
    main = counts["g"].iloc[0]
    rows = []
    if "generation" in methods:
        rows += _fitted(study, key, visit, treatments, decide, f"API generation {main} only",
                        replace(base, generation=main), f"values of {', '.join(counts['g'].iloc[1:])} left out")
    if "bridge" in methods:
        offsets, missing = [], []
        bridged = study.bridge([key]).set_index(["from_generation", "to_generation"])
        for g in counts["g"].iloc[1:]:
            if (main, g) in bridged.index:
                offsets.append((g, -float(bridged.loc[(main, g), "offset"])))
            elif (g, main) in bridged.index:
                offsets.append((g, float(bridged.loc[(g, main), "offset"])))
            else:
                missing.append(g)
        if missing:
            rows += [{**_empty(t, study.plan.control, visit), "analysis": f"bridged onto API generation {main}",
                      "note": f"not estimable: no photo was analysed under both {main} and {', '.join(missing)}"}
                     for t in treatments]
        else:
            rows += _fitted(study, key, visit, treatments, decide, f"bridged onto API generation {main}",
                            replace(base, offsets=tuple(offsets)), "; ".join(f"{g} values {o:+.2f}" for g, o in offsets))
    return rows


def _fitted(study, key, visit, treatments, decide, name, rules, note) -> list:
    """The MMRM under `rules`, one row per treatment; a model that cannot be fitted is a row saying why."""
    try:
        fit = mmrm(study, key, rules=rules)
        return decide([_row(name, fit.diff(visit, t), note) for t in treatments], fit)
    except UsageError as e:
        return [{**_empty(t, study.plan.control, visit), "analysis": name, "note": f"not estimable: {e}"}
                for t in treatments]


def _empty(treatment, control, visit) -> dict:
    return {"treatment": treatment, "control": control, "visit": visit, "estimate": math.nan, "std_error": math.nan,
            "df": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "p_adjusted": math.nan,
            "decision": ""}


def _row(name, r, note) -> dict:
    return {"analysis": name, "treatment": r["treatment"], "control": r["control"], "visit": r.get("visit", ""),
            "estimate": r["estimate"], "std_error": r["std_error"], "df": r["df"], "ci_low": r["ci_low"],
            "ci_high": r["ci_high"], "p": r["p"], "note": note}

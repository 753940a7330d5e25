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
from .trial import _arm_pair, arm_changes, mmrm, mmrm_data, model_of

DEFAULTS = {"methods": list(SENSITIVITY), "imputations": 100, "seed": 20241108}
COLUMNS = ["analysis", "treatment", "control", "visit", "estimate", "std_error", "df", "ci_low", "ci_high", "p",
           "decision", "note"]


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
    fit = study.mmrm(key)
    rows = [_row("primary: MMRM (missing at random)", fit.diff(visit, t), plan.alpha, fit.method) for t in treatments]
    if "qc" in methods:
        other = study.mmrm(key, exclude_flagged=plan.qc != "exclude")
        rows += [_row(other.qc, other.diff(visit, t), plan.alpha, other.method) for t in treatments]
    rows += _instrument_rows(study, key, visit, treatments, plan.alpha, methods)
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
            rows += [_row(imputation.NAMES[kinds[meth]], {**r, "visit": visit}, plan.alpha, note)
                     for r in pooled.to_dict("records")]
        if "tipping" in methods:
            better = metric_info(key)["better"]
            direction = -1.0 if better == "higher" else 1.0
            span = 4 * abs(fit.diff(visit, treatments[0])["estimate"]) + 10 * fit.diff(visit, treatments[0])["std_error"]
            for t in treatments:
                tip = imputation.tipping_point(imp, t, plan.alpha, direction, span)
                shift = direction * tip["delta"]
                text = tip["note"] or (f"shifting the treated subjects' imputed changes at {visit} by "
                                       f"{shift:+.{decimals([shift])}f} {metric_info(key)['unit']} flips the "
                                       "conclusion")
                rows.append({"analysis": "tipping point (MAR + delta)", "treatment": t, "control": control,
                             "visit": visit, "estimate": shift, "std_error": math.nan,
                             "df": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": tip["p_at_zero"],
                             "decision": "", "note": text})
    return _table(rows, key, visit, m, seed)


def _table(rows, key, visit, m, seed) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.attrs.update(metric=key, visit=visit, imputations=m, seed=seed)
    return out


def _instrument_rows(study, key, visit, treatments, alpha, methods) -> list:
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
        rows += _fitted(study, key, visit, treatments, alpha, f"API generation {main} only",
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
            rows += _fitted(study, key, visit, treatments, alpha, f"bridged onto API generation {main}",
                            replace(base, offsets=tuple(offsets)), "; ".join(f"{g} values {o:+.2f}" for g, o in offsets))
    return rows


def _fitted(study, key, visit, treatments, alpha, name, rules, note) -> list:
    """The MMRM under `rules`, one row per treatment; a model that cannot be fitted is a row saying why."""
    try:
        fit = mmrm(study, key, rules=rules)
        return [_row(name, fit.diff(visit, t), alpha, note) for t in treatments]
    except UsageError as e:
        return [{**_empty(t, study.plan.control, visit), "analysis": name, "note": f"not estimable: {e}"}
                for t in treatments]


def _empty(treatment, control, visit) -> dict:
    return {"treatment": treatment, "control": control, "visit": visit, "estimate": math.nan, "std_error": math.nan,
            "df": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "decision": ""}


def _row(name, r, alpha, note) -> dict:
    return {"analysis": name, "treatment": r["treatment"], "control": r["control"], "visit": r.get("visit", ""),
            "estimate": r["estimate"], "std_error": r["std_error"], "df": r["df"], "ci_low": r["ci_low"],
            "ci_high": r["ci_high"], "p": r["p"],
            "decision": "significant" if r["p"] < alpha else "not significant", "note": note}

"""CDISC ADaM datasets from a study: ADSL (one row per subject) and ADSKIN (the BDS, one row per subject x
parameter x analysis visit), with a label for every variable, names and labels within SAS XPORT v5 limits
(8 and 40 characters), and the plan's rules for the population flags and the primary analysis record.

Every number comes from the study's helpers (`change_from_baseline`, `qc`), so the export and the report
cannot disagree. PARAMCD is derived from the metric key, unique over the whole catalog and stable.

Example
-------
>>> paramcd("score.water"), paramcd("area.water.whole_face")
('SCWATER', 'ARWATERW')
>>> from skintrack.demo import demo_study
>>> adsl, adskin = adam(demo_study(), ["score.water"])
>>> len(adsl), sorted(adskin["ANL01FL"].unique())
(24, ['N', 'Y'])
"""
from __future__ import annotations

import functools
import re

import numpy as np
import pandas as pd

from ..tables.catalog import catalog, metric_info

FAMILY = {"score": "SC", "count": "CN", "area": "AR", "severity": "SV", "tone": "TN", "wrinkle": "WR", "skin": "SK"}
ADSL_LABELS = {"STUDYID": "Study Identifier", "USUBJID": "Unique Subject Identifier",
               "SUBJID": "Subject Identifier for the Study", "ARM": "Description of Planned Arm",
               "TRT01P": "Planned Treatment for Period 01", "TRT01PN": "Planned Treatment for Period 01 (N)",
               "TRTSDT": "Date of First Exposure (baseline visit)", "ITTFL": "Intent-To-Treat Population Flag",
               "EFFFL": "Efficacy Population Flag"}
ADSKIN_LABELS = {"STUDYID": "Study Identifier", "USUBJID": "Unique Subject Identifier",
                 "TRTP": "Planned Treatment", "TRTPN": "Planned Treatment (N)", "PARAMCD": "Parameter Code",
                 "PARAM": "Parameter", "AVISIT": "Analysis Visit", "AVISITN": "Analysis Visit (N)",
                 "ADT": "Analysis Date", "ADY": "Analysis Relative Day", "AVAL": "Analysis Value",
                 "BASE": "Baseline Value", "CHG": "Change from Baseline", "PCHG": "Percent Change from Baseline",
                 "ABLFL": "Baseline Record Flag", "ANL01FL": "Analysis Flag 01 (primary analysis record)",
                 "CRIT1": "Analysis Criterion 1", "CRIT1FL": "Criterion 1 Evaluation Result Flag",
                 "QCREAS": "Capture QC reasons", "ANALYSID": "skintrack analysis_id (traceability)"}
CRIT1 = "Capture flagged by skintrack QC"


def _abbrev(word: str, n: int) -> str:
    word = re.sub(r"[^A-Z0-9]", "", word.upper())
    return word if len(word) <= n else word[0] + re.sub(r"[AEIOU]", "", word[1:])[: n - 1]


@functools.lru_cache(maxsize=1)
def _codes() -> dict:
    """Every catalog key -> a unique PARAMCD of at most 8 characters (family, feature, region initials)."""
    out, used = {}, set()
    for key in catalog()["key"]:
        parts = key.split(".")
        rest = parts[1:]
        feature = _abbrev(rest[0], 5 if len(rest) > 1 else 6)
        tail = "".join(_abbrev(p, 1) if "_" not in p else "".join(w[0] for w in p.split("_")).upper()
                       for p in rest[1:])
        code = (FAMILY[parts[0]] + feature + tail)[:8]
        i = 1
        while code in used:  # a collision: number it, keeping 8 characters
            i += 1
            code = code[: 8 - len(str(i))] + str(i)
        used.add(code)
        out[key] = code
    return out


def paramcd(key: str) -> str:
    """The PARAMCD of a metric key (at most 8 characters, unique over the catalog)."""
    metric_info(key)
    return _codes()[key]


def xpt_name(column: str, taken: set) -> str:
    """A SAS v5 variable name for a subjects-CSV column: upper case, letters, digits and _, 8 characters, unique."""
    name = re.sub(r"[^A-Z0-9_]", "_", column.upper())
    name = ("_" + name if name[:1].isdigit() else name)[:8] or "VAR"
    base, i = name, 1
    while name in taken:
        i += 1
        name = base[: 8 - len(str(i))] + str(i)
    taken.add(name)
    return name


def adam(study, metrics=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ADSL, ADSKIN) of the study, for `metrics` (default: every score and the plan's endpoints). Each
    frame's ``.attrs["labels"]`` maps its variables to their labels."""
    plan = study.plan
    if metrics is None:
        cat = catalog()
        metrics = list(dict.fromkeys(cat.loc[(cat["family"] == "score") & (cat["region"].isna()), "key"].tolist()
                                     + [e.metric for e in plan.endpoints]))
    studyid = plan.protocol or study.path.name
    adsl = _adsl(study, plan, studyid)
    rows = [_param_rows(study, plan, key, adsl) for key in metrics]
    adskin = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(ADSKIN_LABELS))
    adskin.attrs["labels"] = dict(ADSKIN_LABELS)
    return adsl, adskin


def _adsl(study, plan, studyid) -> pd.DataFrame:
    subjects = study.sql("SELECT * FROM subjects ORDER BY subject_id")
    arms = [plan.control, *plan.treatments]
    df = pd.DataFrame({"STUDYID": studyid, "USUBJID": studyid + "-" + subjects["subject_id"],
                       "SUBJID": subjects["subject_id"]})
    arm = subjects["arm"] if "arm" in subjects else pd.Series([None] * len(subjects))
    df["ARM"] = df["TRT01P"] = arm.to_numpy()
    df["TRT01PN"] = [float(arms.index(a)) if a in arms else np.nan for a in arm]
    labels = dict(ADSL_LABELS)
    taken = set(labels)
    for col in subjects.columns.drop(["subject_id", "arm"], errors="ignore"):
        name = xpt_name(col, taken)
        df[name] = subjects[col].to_numpy()
        labels[name] = f"Subjects CSV: {col}"[:40]
    base_dates = study.sql("SELECT subject_id, min(taken_at) AS t FROM analyses WHERE visit = ? AND ok GROUP BY 1",
                           [plan.baseline])
    df["TRTSDT"] = df["SUBJID"].map(dict(zip(base_dates["subject_id"], base_dates["t"].dt.date)))
    df["ITTFL"] = np.where(df["TRT01P"].notna(), "Y", "N")
    efficacy = set()
    if plan.primary is not None and "arm" in subjects:
        ch = study.change_from_baseline(plan.primary.metric, exclude_flagged=plan.qc == "exclude")
        efficacy = set(ch.loc[~ch["is_baseline"].astype(bool), "subject_id"])
    df["EFFFL"] = np.where(df["SUBJID"].isin(efficacy) & (df["ITTFL"] == "Y"), "Y", "N")
    df.attrs["labels"] = labels
    return df


def _param_rows(study, plan, key, adsl) -> pd.DataFrame:
    info = metric_info(key)
    tl = study.timeline(key)
    ch = study.change_from_baseline(key)
    qc = study.qc()[["analysis_id", "flagged", "reasons"]]
    df = tl.merge(ch[["subject_id", "visit", "baseline_value", "delta", "pct_change", "is_baseline"]],
                  on=["subject_id", "visit"], how="left")
    ids = _observation_ids(study, key)
    df = df.merge(ids, on=["subject_id", "visit"], how="left").merge(qc, on="analysis_id", how="left")
    trt = adsl.set_index("SUBJID")
    schedule = plan.schedule
    base_flag = df["is_baseline"].fillna(False).astype(bool)
    flagged = df["flagged"].fillna(False).astype(bool)
    start = df["subject_id"].map(trt["TRTSDT"])
    adt = df["taken_at"].dt.date
    days = [float((a - s).days + ((a - s).days >= 0)) if isinstance(s, type(a)) else np.nan  # no day 0 in ADaM
            for a, s in zip(adt, start)]
    out = pd.DataFrame({
        "STUDYID": trt["STUDYID"].iloc[0] if len(trt) else plan.protocol, "USUBJID": df["subject_id"].map(trt["USUBJID"]),
        "TRTP": df["subject_id"].map(trt["TRT01P"]), "TRTPN": df["subject_id"].map(trt["TRT01PN"]),
        "PARAMCD": paramcd(key), "PARAM": f"{info['description'].rstrip('.')}" + (f" ({info['unit']})" if info["unit"]
                                                                                  else ""),
        "AVISIT": df["visit"], "AVISITN": [float(schedule.index(v)) if v in schedule else np.nan for v in df["visit"]],
        "ADT": adt, "ADY": days, "AVAL": df["value"], "BASE": df["baseline_value"],
        "CHG": df["delta"].where(~base_flag), "PCHG": df["pct_change"].where(~base_flag),
        "ABLFL": np.where(base_flag, "Y", ""),
        "ANL01FL": np.where(df["baseline_value"].notna() & ~base_flag & df["visit"].isin(schedule)
                            & ((plan.qc == "include") | ~flagged), "Y", "N"),
        "CRIT1": CRIT1, "CRIT1FL": np.where(flagged, "Y", "N"), "QCREAS": df["reasons"].fillna(""),
        "ANALYSID": df["analysis_id"]})
    return out


def _observation_ids(study, key) -> pd.DataFrame:
    """The analysis behind each (subject, visit) value of `key` (the one the helpers use)."""
    from ..analysis.trends import observations

    sql, params = observations(key)
    return study.sql(f"WITH {sql} SELECT subject_id, visit, analysis_id FROM tl", params)

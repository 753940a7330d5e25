"""CDISC ADaM datasets from a study: ADSL (one row per subject) and ADSKIN (the BDS, one row per subject x
parameter x capture), with a label for every variable, names and labels within SAS XPORT v5 limits
(8 and 40 characters).

ADSKIN is built from exactly the records the analyses use (`skintrack.analysis.selection`): the plan's
capture QC, visit windows, intercurrent events and baseline rule decide ``ANL01FL`` (the primary
analysis's records), ``ABLFL`` (the baseline record used), ``BASE``, ``CHG`` and ``PCHG``, and ``ANLREAS``
says why a record is not analysed. Refitting the primary MMRM from ``ANL01FL = "Y"`` alone gives the
report's numbers (tests/test_adam.py does it in R). PARAMCD is derived from the metric key, unique over
the whole catalog and stable.

Example
-------
>>> paramcd("score.water"), paramcd("area.water.whole_face")
('SCWATER', 'ARWATERW')
>>> from skintrack.demo import demo_study
>>> adsl, adskin = adam(demo_study(), ["score.water"])
>>> len(adsl), sorted(adskin["ANL01FL"].unique())
(24, ['', 'Y'])
"""
from __future__ import annotations

import functools
import json
import re

import numpy as np
import pandas as pd

from ..analysis.selection import records_sql
from ..tables.catalog import catalog, declared_measures, metric_info

FAMILY = {"score": "SC", "count": "CN", "area": "AR", "severity": "SV", "tone": "TN", "wrinkle": "WR", "skin": "SK"}
ADSL_LABELS = {"STUDYID": "Study Identifier", "USUBJID": "Unique Subject Identifier",
               "SUBJID": "Subject Identifier for the Study", "ARM": "Description of Planned Arm",
               "ACTARM": "Description of Actual Arm", "TRT01P": "Planned Treatment for Period 01",
               "TRT01PN": "Planned Treatment for Period 01 (N)", "TRT01A": "Actual Treatment for Period 01",
               "TRT01AN": "Actual Treatment for Period 01 (N)", "TRTSDT": "Date of First Exposure to Treatment",
               "TRTEDT": "Date of Last Exposure to Treatment", "RANDFL": "Randomized Population Flag",
               "ITTFL": "Intent-To-Treat Population Flag", "SAFFL": "Safety Population Flag",
               "EFFFL": "Efficacy Population Flag", "AGEU": "Age Units"}
ADSKIN_LABELS = {"STUDYID": "Study Identifier", "USUBJID": "Unique Subject Identifier",
                 "TRTP": "Planned Treatment", "TRTPN": "Planned Treatment (N)", "TRTA": "Actual Treatment",
                 "TRTAN": "Actual Treatment (N)", "PARAMCD": "Parameter Code", "PARAM": "Parameter",
                 "PARAMN": "Parameter (N)", "AVISIT": "Analysis Visit", "AVISITN": "Analysis Visit (N)",
                 "AWTARGET": "Analysis Window Target", "AWLO": "Analysis Window Beginning Timepoint",
                 "AWHI": "Analysis Window End Timepoint", "ADT": "Analysis Date", "ADY": "Analysis Relative Day",
                 "AVAL": "Analysis Value", "AVALC": "Analysis Value (C)", "BASE": "Baseline Value",
                 "BASETYPE": "Baseline Type", "CHG": "Change from Baseline",
                 "PCHG": "Percent Change from Baseline", "ABLFL": "Baseline Record Flag",
                 "ANL01FL": "Analysis Flag 01 (primary analysis)", "ANLREAS": "Reason not in the primary analysis",
                 "DTYPE": "Derivation Type", "CRIT1": "Analysis Criterion 1",
                 "CRIT1FL": "Criterion 1 Evaluation Result Flag", "QCREAS": "Capture QC reasons",
                 "SRCDOM": "Source Data", "SRCVAR": "Source Variable", "ANALYSID": "skintrack analysis_id"}
DATASET_LABELS = {"ADSL": "Subject-Level Analysis Dataset", "ADSKIN": "Skin Measurements Analysis Dataset"}
CRIT1 = "Capture flagged by skintrack QC"
# Subjects-CSV columns with a standard ADaM name and label (any other keeps its own name, labelled as such).
KNOWN = {"age": ("AGE", "Age"), "sex": ("SEX", "Sex"), "race": ("RACE", "Race"), "ethnic": ("ETHNIC", "Ethnicity"),
         "ethnicity": ("ETHNIC", "Ethnicity"), "country": ("COUNTRY", "Country"),
         "site": ("SITEID", "Study Site Identifier")}


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
    """The PARAMCD of a metric key (at most 8 characters, unique over the catalog; a measure's is "M" and
    its name, numbered if two measures of the study would share one).

    >>> paramcd("score.water")
    'SCWATER'
    """
    metric_info(key)
    if key.startswith("measure."):
        return _measure_codes(tuple(declared_measures()))[key]
    return _codes()[key]


def paramn(key: str) -> int:
    """PARAMN: the catalog's order, the study's measures after the API's metrics (by name)."""
    if key.startswith("measure."):
        return len(_codes()) + declared_measures().index(key) + 1
    return list(_codes()).index(key) + 1


@functools.lru_cache(maxsize=8)
def _measure_codes(keys: tuple) -> dict:
    out, used = {}, set()
    for key in keys:
        code, i = ("M" + _abbrev(key.split(".", 1)[1].replace("_", ""), 7))[:8], 1
        while code in used:
            i += 1
            code = code[: 8 - len(str(i))] + str(i)
        used.add(code)
        out[key] = code
    return out


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


def label(text: str, most: int = 40) -> str:
    """A label within XPORT's 40 characters, cut between words (never mid-word unless one word is longer).

    >>> label("Subjects CSV: self-reported Fitzpatrick skin type at screening")
    'Subjects CSV: self-reported Fitzpatrick'
    """
    if len(text) <= most:
        return text
    cut = text[: most + 1].rsplit(" ", 1)[0].rstrip(" ,;:-")
    return cut if 0 < len(cut) <= most else text[:most]


def adam(study, metrics=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ADSL, ADSKIN) of the study, for `metrics` (default: every score and the plan's endpoints). Each
    frame's ``.attrs["labels"]`` maps its variables to their labels."""
    plan = study.plan
    if metrics is None:
        cat = catalog()
        metrics = list(dict.fromkeys(cat.loc[(cat["family"] == "score") & (cat["region"].isna()), "key"].tolist()
                                     + [e.metric for e in plan.endpoints]))
    metrics = study.metric_list(metrics)
    studyid = plan.protocol or study.path.name
    r = study.rules()
    records = {key: _records(study, key, r) for key in metrics}
    adsl = _adsl(study, plan, studyid, records)
    rows = [_param_rows(plan, key, adsl, records[key], r, _averaged(study, key)) for key in metrics
            if len(records[key])]  # a metric the study holds no value of has no record
    adskin = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(ADSKIN_LABELS))
    adskin.attrs["labels"] = dict(ADSKIN_LABELS)
    for name, df in (("ADSL", adsl), ("ADSKIN", adskin)):
        df.attrs["dataset_label"] = DATASET_LABELS[name]
    return adsl, adskin


def _records(study, key, r) -> pd.DataFrame:
    """Every record of `key` with its fate (`reason`, NULL when used), its QC flags, and the subject's
    baseline value: the analyses' own selection."""
    sql, params = records_sql(key, r)
    qc = study.qc()[["analysis_id", "flagged", "reasons"]]
    df = study.sql(f"WITH {sql} SELECT * FROM recs ORDER BY subject_id, taken_at, analysis_id", params)
    df = df.merge(qc, on="analysis_id", how="left")
    used = df["reason"].isna()
    base = df[used & (df["avisit"] == r.baseline)].set_index("subject_id")["value"]
    df["base"] = df["subject_id"].map(base)
    df["is_base"] = used & (df["avisit"] == r.baseline)
    df["analysed"] = used & ~df["is_base"] & df["base"].notna() & df["avisit"].isin([v for v, _, _ in r.schedule])
    return df


def _averaged(study, key: str) -> set:
    """The records of a measure whose value is the mean of several readings (raters, replicates, sides):
    DTYPE "AVERAGE" in ADSKIN."""
    if not key.startswith("measure."):
        return set()
    many = study.sql("SELECT analysis_id FROM measures WHERE measure = ? GROUP BY analysis_id HAVING count(*) > 1",
                     [key.split(".", 1)[1]])
    return set(many["analysis_id"])


def _adsl(study, plan, studyid, records) -> pd.DataFrame:
    subjects = study.sql("SELECT * FROM subjects ORDER BY subject_id")
    arms = [plan.control, *plan.treatments]
    df = pd.DataFrame({"STUDYID": studyid, "USUBJID": studyid + "-" + subjects["subject_id"],
                       "SUBJID": subjects["subject_id"]})
    arm = subjects["arm"] if "arm" in subjects else pd.Series([None] * len(subjects))
    actual = subjects["arm_actual"] if "arm_actual" in subjects else arm
    df["ARM"] = df["TRT01P"] = arm.to_numpy()
    df["ACTARM"] = df["TRT01A"] = actual.to_numpy()
    df["TRT01PN"] = [float(arms.index(a)) if a in arms else np.nan for a in arm]
    df["TRT01AN"] = [float(arms.index(a)) if a in arms else np.nan for a in actual]
    labels = dict(ADSL_LABELS)
    taken = set(labels)
    for col in subjects.columns.drop(["subject_id", "arm", "arm_actual"], errors="ignore"):
        declared = plan.subject_columns.get(col, {})
        name, text = KNOWN.get(col.lower(), (None, f"Subjects CSV: {col}"))
        name, text = declared.get("name", name), declared.get("label", text)
        name = xpt_name(name or col, taken)
        df[name] = subjects[col].to_numpy()
        labels[name] = label(text)
        if name == "AGE":
            df["AGEU"] = np.where(df["AGE"].notna(), "YEARS", "")
    dates = study.sql("SELECT subject_id, min(taken_at) FILTER (WHERE visit = ?) AS first, max(taken_at) AS last "
                      "FROM analyses WHERE ok GROUP BY 1", [plan.baseline])
    df["TRTSDT"] = df["SUBJID"].map(dict(zip(dates["subject_id"], dates["first"].dt.date)))
    df["TRTEDT"] = df["SUBJID"].map(dict(zip(dates["subject_id"], dates["last"].dt.date)))
    df["RANDFL"] = df["ITTFL"] = np.where(df["TRT01P"].notna(), "Y", "N")
    after = study.sql("SELECT DISTINCT subject_id FROM analyses WHERE ok AND visit IS DISTINCT FROM ?",
                      [plan.baseline])["subject_id"]
    df["SAFFL"] = np.where((df["RANDFL"] == "Y") & df["SUBJID"].isin(set(after)), "Y", "N")
    efficacy = set()
    if plan.primary is not None and plan.primary.metric in records:
        rec = records[plan.primary.metric]
        efficacy = set(rec.loc[rec["analysed"], "subject_id"])
    df["EFFFL"] = np.where(df["SUBJID"].isin(efficacy) & (df["ITTFL"] == "Y"), "Y", "N")
    df.attrs["labels"] = labels
    return df


def _param_rows(plan, key, adsl, df, r, averaged=frozenset()) -> pd.DataFrame:
    info = metric_info(key)
    trt = adsl.set_index("SUBJID")
    schedule = {v: (d, w) for v, d, w in r.schedule}
    order = [v for v, _, _ in r.schedule]
    avisit = df["avisit"].fillna(df["visit"])
    target = [schedule.get(v, (None, None)) for v in avisit]
    post = df["base"].notna() & ~df["is_base"]
    start = df["subject_id"].map(trt["TRTSDT"])
    adt = df["taken_at"].dt.date
    days = [float((a - s).days + ((a - s).days >= 0)) if pd.notna(s) and pd.notna(a) else np.nan  # no day 0 in ADaM
            for a, s in zip(adt, start)]
    labels = json.loads(info["labels"]) if info["labels"] else None
    flagged = df["flagged"].fillna(False).astype(bool)
    analysed = df["analysed"] & df["subject_id"].map(trt["TRT01P"]).isin(plan.arms)
    return pd.DataFrame({
        "STUDYID": trt["STUDYID"].iloc[0] if len(trt) else plan.protocol, "USUBJID": df["subject_id"].map(trt["USUBJID"]),
        "TRTP": df["subject_id"].map(trt["TRT01P"]), "TRTPN": df["subject_id"].map(trt["TRT01PN"]),
        "TRTA": df["subject_id"].map(trt["TRT01A"]), "TRTAN": df["subject_id"].map(trt["TRT01AN"]),
        "PARAMCD": paramcd(key), "PARAM": info["description"].rstrip(".") + (f" ({info['unit']})" if info["unit"]
                                                                             else ""),
        "PARAMN": float(paramn(key)),
        "AVISIT": avisit, "AVISITN": [float(order.index(v)) if v in order else np.nan for v in avisit],
        "AWTARGET": [t[0] if t[0] is not None else np.nan for t in target],
        "AWLO": [t[0] - t[1] if t[0] is not None and t[1] is not None else np.nan for t in target],
        "AWHI": [t[0] + t[1] if t[0] is not None and t[1] is not None else np.nan for t in target],
        "ADT": adt, "ADY": days, "AVAL": df["value"],
        "AVALC": [labels.get(str(int(v)), "") if labels and v == v and v == int(v) else "" for v in df["value"]],
        "BASE": df["base"], "BASETYPE": r.baseline or "",
        "CHG": (df["value"] - df["base"]).where(post),
        "PCHG": (100 * (df["value"] - df["base"]) / df["base"].abs()).where(post & (df["base"] != 0)),
        "ABLFL": np.where(df["is_base"], "Y", ""), "ANL01FL": np.where(analysed, "Y", ""),
        "ANLREAS": np.where(analysed | df["is_base"], "", df["reason"].fillna(
            "no usable baseline (" + str(r.baseline) + ")")),
        "DTYPE": np.where(df["analysis_id"].isin(averaged), "AVERAGE", ""), "CRIT1": CRIT1,
        "CRIT1FL": np.where(flagged, "Y", "N"), "QCREAS": df["reasons"].fillna(""),
        "SRCDOM": "MEASURES" if key.startswith("measure.") else "SKINAPI", "SRCVAR": key, "ANALYSID": df["analysis_id"]})

"""The instrument under the study: which API generation measured what, drift seen by a sentinel panel,
and the bridge between generations.

* `generations`: the generations that measured the study's analyses, with when and how each was inferred
  (`skintrack.tables.generations`);
* `straddles`: every subject whose series, and every planned endpoint whose visits, mix generations, and
  every batch measured across a change its sentinel caught (findings of `skintrack check`);
* `drift`: each sentinel run (a panel of photos re-sent at the start and the end of every `analyze` batch)
  against the reference run, per metric: the mean shift over the panel's photos, whether any photo's value
  moved at all (a deterministic model returns the same photo's values unchanged), and whether the shift
  exceeds the minimal detectable change of a panel mean, MDC = z * sqrt(2 / k) * SEM (k photos; SEM from
  the study's repeat captures, else from the sentinel's repeats in its reference batch; with neither, or
  with repeats that never move, any change counts). z keeps a 5% family-wise error over the m metrics compared
  (Bonferroni, z = Phi^-1(1 - 0.025 / m)), so a model that did not change stops at most 1 batch in 20
  even when its values are noisy; the CI (shift +- MDC) is simultaneous in the same sense;
* `bridge`: from photos analysed under two generations (sentinels, or photos re-sent on purpose), the
  per-metric offset of the newer generation against the older, with a t interval over the photos.

Example
-------
>>> from skintrack.demo import demo_study
>>> generations(demo_study())["api_generation"].tolist()
['v1.7.6']
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..tables.generations import NAMES, UNKNOWN
from . import dist
from .repeatability import repeat_values, repeatability_table
from .stats import t_interval

DRIFT_COLUMNS = ["batch", "position", "called_at", "metric", "reference", "photos", "reference_value", "value",
                 "shift", "ci_low", "ci_high", "sem", "noise", "mdc", "moved", "exceeds_mdc", "generation",
                 "reference_generation"]
BRIDGE_COLUMNS = ["metric", "from_generation", "to_generation", "photos", "offset", "sd", "ci_low", "ci_high",
                  "per_photo"]
RUN_ORDER = {"start": 0, "end": 1}


def generations(study) -> pd.DataFrame:
    """api_generation, analyses, sentinels, first and last call (or capture) time, and how each was inferred."""
    return study.sql("""SELECT a.api_generation, count(*) FILTER (WHERE a.sentinel IS NULL) AS analyses,
                               count(*) FILTER (WHERE a.sentinel IS NOT NULL) AS sentinels,
                               min(coalesce(a.called_at, CAST(s.taken_at AS TIMESTAMPTZ))) AS first,
                               max(coalesce(a.called_at, CAST(s.taken_at AS TIMESTAMPTZ))) AS last,
                               string_agg(DISTINCT regexp_replace(a.api_generation_basis, 'call date [0-9-]+', 'dated by the call'), '; '
                                          ORDER BY regexp_replace(a.api_generation_basis, 'call date [0-9-]+', 'dated by the call')) AS basis
                        FROM analyses_raw a LEFT JOIN sessions s USING (analysis_id) WHERE a.ok
                        GROUP BY a.api_generation ORDER BY first NULLS LAST, a.api_generation""")


def generations_used(study, key: str, visits, rules) -> list:
    """The generations that measured the values of `key` at `visits` that the analyses use (rules applied)."""
    from .selection import records_sql

    sql, params = records_sql(key, rules)
    found = study.sql(f"""WITH {sql} SELECT DISTINCT coalesce(a.api_generation, '{UNKNOWN}') AS g FROM recs
                          JOIN analyses_raw a USING (analysis_id) WHERE recs.reason IS NULL
                          AND list_contains($visits, recs.avisit)""", {**params, "visits": list(visits)})["g"]
    return _ordered(found)


def _ordered(names) -> list:
    return sorted(set(names), key=lambda g: NAMES.index(g) if g in NAMES else len(NAMES))


def straddles(study) -> pd.DataFrame:
    """Findings (where, problem): subjects and planned endpoints whose values straddle API generations
    (unless the plan restricts the analyses to one), and batches measured across a change."""
    plan = study.plan
    rows = []
    if not plan.generation:
        series = study.sql(f"""SELECT s.subject_id, a.api_generation AS g, string_agg(s.visit, ', ' ORDER BY i.seq) AS
                                      visits
                               FROM sessions s JOIN analyses_raw a USING (analysis_id)
                               LEFT JOIN session_index i USING (analysis_id)
                               WHERE a.ok AND a.sentinel IS NULL AND s.subject_id IS NOT NULL
                                 AND a.api_generation IS NOT NULL AND a.api_generation <> '{UNKNOWN}'
                               GROUP BY ALL""")
        for subject, g in series.groupby("subject_id", sort=True):
            if g["g"].nunique() > 1:
                parts = [f"{gen} ({g.loc[g['g'] == gen, 'visits'].iloc[0]})" for gen in _ordered(g["g"])]
                rows.append({"where": f"subject {subject}", "problem": "values measured by different API generations: "
                             + " and ".join(parts) + "; the change between them is partly the instrument's"})
        rules = study.rules()
        for e in plan.endpoints:
            used = [g for g in generations_used(study, e.metric, [plan.baseline, e.visit], rules) if g != UNKNOWN]
            if len(used) > 1:
                rows.append({"where": f"endpoint {e.metric} at {e.visit}",
                             "problem": f"its values at {plan.baseline} and {e.visit} come from API generations "
                                        f"{', '.join(used)}; restrict the plan to one (generation = \"{used[-1]}\") "
                                        "or bridge them (skintrack bridge)"})
    events = study.sql("SELECT batch, detail FROM instrument WHERE event = 'changed within batch' ORDER BY \"at\"")
    for r in events.itertuples():
        rows.append({"where": f"batch {r.batch}", "problem": f"measured across an instrument change its sentinel "
                     f"caught ({r.detail}); its analyses straddle the change"})
    return pd.DataFrame(rows, columns=["where", "problem"])


# ---- the sentinel ------------------------------------------------------------------------------------
def sentinel_values(study, metrics=None) -> pd.DataFrame:
    """Every sentinel result: batch, position, called_at, photo (SHA-256, or the panel name), api_generation,
    metric, value."""
    wanted = "AND m.metric IN (SELECT unnest($metrics))" if metrics is not None else ""
    return study.sql(f"""SELECT a.batch, a.batch_position AS position, a.called_at,
                                coalesce(a.photo_sha256, a.sentinel) AS photo, a.api_generation, m.metric, m.value
                         FROM analyses_raw a JOIN metrics m USING (analysis_id)
                         WHERE a.sentinel IS NOT NULL AND a.ok AND m.value IS NOT NULL {wanted}
                         ORDER BY a.called_at, a.batch, position, photo, m.metric""",
                     {"metrics": list(metrics)} if metrics is not None else None)


def _runs(values: pd.DataFrame) -> pd.DataFrame:
    runs = values.groupby(["batch", "position"], dropna=False).agg(called_at=("called_at", "min"),
                                                                  generation=("api_generation", "max")).reset_index()
    runs["order"] = runs["position"].map(RUN_ORDER).fillna(0)
    first = runs.groupby("batch")["called_at"].transform("min")
    return runs.assign(first=first).sort_values(["first", "batch", "order"], ignore_index=True)


def study_noise(study, metrics) -> dict:
    """{metric: (sem, source)} from the study's repeat captures."""
    if not len(metrics):
        return {}
    rep = repeatability_table(repeat_values(study, list(metrics)))
    return {r.metric: (r.sem, "repeat captures of the study") for r in rep.itertuples() if np.isfinite(r.sem)}


def noise(found: dict, values: pd.DataFrame) -> pd.DataFrame:
    """Per metric: sem and where it comes from (`found`: the study's repeat captures, else the repeats of
    the sentinel in `values`)."""
    found = dict(found)
    rest = values[~values["metric"].isin(found)]
    if len(rest):
        own = rest.assign(session=rest["photo"] + " " + rest["api_generation"].fillna(""))
        for r in repeatability_table(own[["metric", "session", "value"]]).itertuples():
            found[r.metric] = (r.sem, "the sentinel's repeats in its reference batch")
    return pd.DataFrame([{"metric": m, "sem": v[0], "noise": v[1]} for m, v in found.items()],
                        columns=["metric", "sem", "noise"])


def _references(study, values: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """The runs in order, and for each its reference run: the first run, or the first run of the latest
    batch whose drift a user accepted."""
    runs = _runs(values)
    accepted = set(study.sql("SELECT batch FROM instrument WHERE event = 'accepted drift'")["batch"])
    refs, ref = [], None
    for run in runs.to_dict("records"):
        if ref is None or (run["batch"] in accepted and run["order"] == 0):
            ref = run
        refs.append(ref)
    return runs, refs


def drift(study, metrics=None, batch: str | None = None) -> pd.DataFrame:
    """Each sentinel run against its reference run, per metric (see the module docstring); `batch` keeps
    the runs of one batch. The reference is the first run, or the first run of the latest batch whose
    drift a user accepted. Empty when the study has no sentinel results."""
    values = sentinel_values(study, metrics)
    if values.empty:
        return pd.DataFrame(columns=DRIFT_COLUMNS)
    runs, refs = _references(study, values)
    by_run = {k: _means(g) for k, g in values.groupby(["batch", "position"], dropna=False)}  # a reference serves many
    tables, repeats, floors = [], study_noise(study, values["metric"].unique()), {}
    for i, (run, ref) in enumerate(zip(runs.to_dict("records"), refs)):
        if _key(run) == _key(ref) or (batch is not None and run["batch"] != batch):
            continue
        before = _reference_runs(runs, ref, i)
        if before not in floors:  # the runs after a whole reference batch share its floor
            floors[before] = _floor(repeats, values, before)
        tables.append(_compare(by_run[_key(run)], by_run[_key(ref)], run, ref, floors[before]))
    tables = [t for t in tables if len(t)]  # runs with no photo in common say nothing
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=DRIFT_COLUMNS)


def _key(run: dict) -> tuple:
    return run["batch"], run["position"]


def _reference_runs(runs: pd.DataFrame, ref: dict, i: int) -> frozenset:
    """The runs of the i-th run's reference batch before it (never the run being judged): (batch, position)."""
    before = runs.iloc[:i]
    mine = before["batch"] == ref["batch"]
    return frozenset(zip(before.loc[mine, "batch"], before.loc[mine, "position"]))


def _floor(repeats: dict, values: pd.DataFrame, keys: frozenset) -> pd.DataFrame:
    """The noise floor: the study's repeats, else the sentinel's repeats in the runs `keys`."""
    mine = values[[k in keys for k in zip(values["batch"], values["position"])]]
    return noise(repeats, mine).set_index("metric")


def _means(run: pd.DataFrame) -> pd.Series:
    """A run's value per (metric, photo): the mean of the photo's captures in it."""
    return run.groupby(["metric", "photo"])["value"].mean()


def _compare(now: pd.Series, then: pd.Series, run: dict, ref: dict, floor) -> pd.DataFrame:
    """DRIFT_COLUMNS: the run whose `_means` are `now` against the run whose `_means` are `then`, per metric,
    over their common photos. Built as columns (a frame of records per run cost 90 ms)."""
    both = pd.concat([now.rename("value"), then.rename("reference_value")], axis=1, join="inner")
    d = both["value"] - both["reference_value"]
    by = both.assign(d=d, moved=d.abs() > 1e-9).groupby(level="metric", sort=True)
    per = pd.DataFrame({"photos": by.size(), "shift": by["d"].mean(), "value": by["value"].mean(),
                        "reference_value": by["reference_value"].mean(), "moved": by["moved"].any()})
    z = dist.norm_ppf(1 - 0.025 / max(len(per), 1))
    measured = per.index.isin(floor.index)
    sem = np.where(measured, floor["sem"].reindex(per.index).astype(float), 0.0)
    mdc = z * np.sqrt(2 / per["photos"].to_numpy()) * sem
    shift, moved = per["shift"].to_numpy(), per["moved"].to_numpy()
    out = {"batch": run["batch"], "position": run["position"], "called_at": run["called_at"], "metric": per.index,
           "reference": f"{ref['batch']} {ref['position']}", "photos": per["photos"].to_numpy(),
           "reference_value": per["reference_value"].to_numpy(), "value": per["value"].to_numpy(), "shift": shift,
           "ci_low": shift - mdc, "ci_high": shift + mdc, "sem": sem,
           "noise": np.where(measured, floor["noise"].reindex(per.index), "none measured: any change counts"),
           "mdc": mdc, "moved": moved, "exceeds_mdc": moved & (np.abs(shift) > mdc + 1e-9),
           "generation": run["generation"], "reference_generation": ref["generation"]}
    return pd.DataFrame(out, index=range(len(per)))


def within_batch(study, batch: str, metrics=None) -> str | None:
    """What moved between the start and the end run of one batch (the verdict line), or None; the noise
    floor is the one the batch's start run was judged against."""
    values = sentinel_values(study, metrics)
    runs, refs = _references(study, values)
    info = {r["position"]: (i, r, ref) for i, (r, ref) in enumerate(zip(runs.to_dict("records"), refs))
            if r["batch"] == batch}
    if not {"start", "end"} <= set(info):
        return None
    (_, start, ref), (i, end, _) = info["start"], info["end"]
    floor = _floor(study_noise(study, values["metric"].unique()), values, _reference_runs(runs, ref, i))
    mine = values[values["batch"] == batch]
    return verdict(_compare(_means(mine[mine["position"] == "end"]), _means(mine[mine["position"] == "start"]), end,
                            start, floor))


def verdict(table: pd.DataFrame) -> str | None:
    """One line naming the metrics whose shift exceeds the MDC and a change of generation, or None."""
    if table.empty:
        return None
    moved = table[table["exceeds_mdc"]].reindex(table.loc[table["exceeds_mdc"], "shift"].abs()
                                                .sort_values(ascending=False).index)
    parts = [f"{r.metric} {r.shift:+.2f} (MDC {r.mdc:.2f})" for r in moved.head(8).itertuples()]
    if len(moved) > 8:
        parts.append(f"and {len(moved) - 8} more")
    gens = table[table["generation"] != table["reference_generation"]]
    if len(gens):
        r = gens.iloc[0]
        parts.insert(0, f"API generation {r.reference_generation} -> {r.generation}")
    return "; ".join(parts) or None


# ---- the bridge --------------------------------------------------------------------------------------
def bridge(study, metrics=None) -> pd.DataFrame:
    """Per metric and pair of generations (older -> newer): the photos analysed under both, the mean offset
    (newer minus older) with its SD and t interval over the photos, and the per-photo differences.
    Photos are matched by their bytes (the SHA-256 the archive records)."""
    wanted = "AND m.metric IN (SELECT unnest($metrics))" if metrics is not None else ""
    values = study.sql(f"""SELECT a.photo_sha256 AS photo, a.api_generation AS g, m.metric, avg(m.value) AS value
                           FROM analyses_raw a JOIN metrics m USING (analysis_id)
                           WHERE a.ok AND a.photo_sha256 IS NOT NULL AND m.value IS NOT NULL
                             AND a.api_generation IS NOT NULL AND a.api_generation <> '{UNKNOWN}' {wanted}
                           GROUP BY ALL""", {"metrics": list(metrics)} if metrics is not None else None)
    gens = _ordered(values["g"])
    rows = []
    for i, older in enumerate(gens):
        for newer in gens[i + 1:]:
            a = values[values["g"] == older].set_index(["metric", "photo"])["value"]
            b = values[values["g"] == newer].set_index(["metric", "photo"])["value"]
            both = pd.concat([a.rename("old"), b.rename("new")], axis=1, join="inner").reset_index()
            for metric, g in both.groupby("metric", sort=True):
                d = (g["new"] - g["old"]).to_numpy()
                k, offset = len(d), float(d.mean())
                sd = float(d.std(ddof=1)) if k > 1 else math.nan
                low, high = (float(v) for v in t_interval(offset, sd, k))
                rows.append({"metric": metric, "from_generation": older, "to_generation": newer, "photos": k,
                             "offset": offset, "sd": sd, "ci_low": low, "ci_high": high,
                             "per_photo": ", ".join(f"{x:+g}" for x in d)})
    out = pd.DataFrame(rows, columns=BRIDGE_COLUMNS)
    return out.reindex(out["offset"].abs().sort_values(ascending=False, kind="stable").index).reset_index(drop=True)

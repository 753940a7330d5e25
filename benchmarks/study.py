"""Study-helper benchmark: skintrack (DuckDB) against pandas on the same Parquet files, in one run.

Builds a SIMULATED study of 1,000,000 analyses (100,000 subjects x 10 visits, 12 score metrics, so
12 million score rows) directly into a study's lake (and the same tables as plain Parquet for pandas), then times `change_from_baseline`, `slopes` and
`cohort` on one metric, each against pandas doing the same from the same files (reading included);
each figure is the best of --repeat runs.

    python benchmarks/study.py [--subjects 100000] [--visits 10] [--keep DIR]
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import skintrack
from skintrack.tables import session_index, store
from skintrack.tables.schema import TABLES

METRICS = ["total", "water", "rough", "melanin", "pores", "acne", "blackhead", "wrinkle", "dark_circle",
           "sensitivity", "oily_intensity", "skin_type"]


def build(folder: Path, subjects: int, visits: int, seed: int = 1) -> None:
    """Write the SIMULATED study into the lake in one transaction (as one big ingest would), and the same
    tables as plain Parquet files under `folder/peer/` for pandas."""
    rng = np.random.default_rng(seed)
    n = subjects * visits
    ids = pa.array([f"{i:032x}" for i in range(n)])
    subject = np.repeat(np.arange(subjects), visits)
    visit_no = np.tile(np.arange(visits), subjects)
    day = visit_no * 14 + rng.integers(-2, 3, n) * (visit_no > 0)
    taken = pd.Timestamp("2024-01-01") + pd.to_timedelta(day + rng.integers(0, 30, n).repeat(1), unit="D")
    subject_ids = pa.array([f"P{i:06d}" for i in range(subjects)])
    now = pa.scalar(dt.datetime.now(dt.timezone.utc), pa.timestamp("us", tz="UTC"))
    tables = {}
    tables["sessions"] = pa.table({"analysis_id": ids, "subject_id": subject_ids.take(pa.array(subject)),
                                   "visit": pa.array([f"V{v}" for v in visit_no]),
                                   "taken_at": pa.array(taken.values.astype("datetime64[us]")),
                                   "assigned_at": pa.array(np.full(n, now.value), pa.timestamp("us", tz="UTC"))})
    arm = np.where(rng.random(subjects) < 0.5, "active", "placebo")
    tables["subjects"] = pa.table({"subject_id": subject_ids, "arm": arm, "assigned_at": pa.array(
        np.full(subjects, now.value), pa.timestamp("us", tz="UTC"))})
    cols = {f.name: pa.nulls(n, f.type) for f in TABLES["analyses"]}
    cols.update(analysis_id=ids, ok=pa.array(np.ones(n, bool)))
    tables["analyses"] = pa.table(cols, schema=TABLES["analyses"])
    base = rng.normal(70, 10, (subjects, len(METRICS)))
    rows = []
    for j, m in enumerate(METRICS):
        value = np.repeat(base[:, j], visits) + \
            visit_no * np.where(np.repeat(arm, visits) == "active", 0.8, 0.1) + rng.normal(0, 3, n)
        rows.append(pa.table({"analysis_id": ids, "metric": pa.array(np.full(n, m)), "value": np.round(value)}))
    tables["scores"] = pa.concat_tables(rows)
    con = store.connect(folder, write=True)
    with store.transaction(con, "ingest", {"analyses added": n, "simulated": "benchmark"}):
        for name, t in tables.items():
            store.insert(con, name, t)
        session_index.update(con)
    con.close()
    (folder / "peer").mkdir()
    for name, t in tables.items():
        pq.write_table(t, folder / "peer" / f"{name}.parquet", row_group_size=1_000_000)


def pandas_obs(folder: Path, metric: str) -> pd.DataFrame:
    b = folder / "peer"
    scores = pd.read_parquet(b / "scores.parquet", filters=[("metric", "==", metric)], columns=["analysis_id", "value"])
    ses = pd.read_parquet(b / "sessions.parquet", columns=["analysis_id", "subject_id", "visit", "taken_at"])
    ok = pd.read_parquet(b / "analyses.parquet", columns=["analysis_id", "ok"])
    df = scores.merge(ses, on="analysis_id").merge(ok[ok.ok], on="analysis_id")
    df = df.sort_values("taken_at", ascending=False).drop_duplicates(["subject_id", "visit"])
    df["days"] = (df.taken_at - df.groupby("subject_id").taken_at.transform("min")).dt.total_seconds() / 86400
    return df


def pandas_change(folder, metric):
    df = pandas_obs(folder, metric)
    first = df.sort_values("taken_at").drop_duplicates("subject_id")[["subject_id", "value"]]
    df = df.merge(first.rename(columns={"value": "baseline_value"}), on="subject_id")
    df["delta"] = df.value - df.baseline_value
    df["pct_change"] = 100 * df.delta / df.baseline_value.abs()
    df["improved"] = df.delta > 0
    return df


def pandas_slopes(folder, metric):
    df = pandas_obs(folder, metric)
    g = df.assign(xy=df.days * df.value, xx=df.days ** 2).groupby("subject_id")
    s = g.agg(n=("value", "size"), sx=("days", "sum"), sy=("value", "sum"), sxy=("xy", "sum"), sxx=("xx", "sum"))
    slope = (s.n * s.sxy - s.sx * s.sy) / (s.n * s.sxx - s.sx ** 2)
    return pd.DataFrame({"n": s.n, "slope_per_30d": slope * 30, "intercept": (s.sy - slope * s.sx) / s.n})


def pandas_cohort(folder, metric):
    df = pandas_change(folder, metric).merge(pd.read_parquet(folder / "peer" / "subjects.parquet",
                                                             columns=["subject_id", "arm"]), on="subject_id")
    return df.groupby(["visit", "arm"]).agg(n=("value", "size"), mean=("value", "mean"), sd=("value", "std"),
                                            median=("value", "median"), q1=("value", lambda v: v.quantile(0.25)),
                                            q3=("value", lambda v: v.quantile(0.75)), change_mean=("delta", "mean"),
                                            change_sd=("delta", "std"))


def timed(fn, *args, repeat: int = 1):
    """Best wall time of `repeat` runs, and the last result."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=100_000)
    ap.add_argument("--visits", type=int, default=10)
    ap.add_argument("--keep")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs for each contender")
    args = ap.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="skb-study-"))
    try:
        if not store.is_study(folder):
            t, _ = timed(build, folder, args.subjects, args.visits)
            print(f"built a SIMULATED study of {args.subjects * args.visits:,} analyses in {t:.1f} s")
        t, s = timed(lambda: skintrack.open(folder))
        t_visits, _ = timed(lambda: s.visits)
        t += t_visits
        print(f"open the study and read its visits (session index kept in the lake): {t:.3f} s")
        print(f"{'helper':22s} {'skintrack s':>12s} {'pandas s':>9s} {'speed-up':>9s} {'rows':>9s}")
        for name, ours, theirs in [
            ("change_from_baseline", lambda: s.change_from_baseline("score.water"), pandas_change),
            ("slopes", lambda: s.slopes("score.water"), pandas_slopes),
            ("cohort", lambda: s.cohort("score.water"), pandas_cohort),
        ]:
            t_ours, out = timed(ours, repeat=args.repeat)
            t_pd, ref = timed(theirs, folder, "water", repeat=args.repeat)
            assert len(out) == len(ref), (name, len(out), len(ref))
            print(f"{name:22s} {t_ours:12.3f} {t_pd:9.3f} {t_pd / t_ours:9.1f} {len(out):9,d}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

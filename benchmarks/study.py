"""Study-helper benchmark: skintrack (DuckDB) against pandas on the same Parquet files, in one run.

Builds a SIMULATED study of 1,000,000 analyses (100,000 subjects x 10 visits, 12 score metrics, so
12 million score rows) directly into a study's lake (and the same tables as plain Parquet for pandas), then times `change_from_baseline`, `slopes` and
`cohort` on one metric, each against pandas doing the same from the same files (reading included).
Each contender runs in its own process (the study opened and the libraries it computes with imported
first, not timed: pandas and pyarrow for the peer, scipy.special for ours, which loads it on first use); its
figures are the best of --repeat runs, CPU (every thread) and wall, and the process's peak memory. The
targets (issue 23): `change_from_baseline` at least 1.5x faster than pandas in CPU, the other helpers 2x.
Each helper is measured twice: computed (the first run at a study version, the user's cache off) and kept
(a large study's records read back from the user's cache, as another process at the same version does).

    python benchmarks/study.py [--subjects 100000] [--visits 10] [--keep DIR]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
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


HELPERS = {"change_from_baseline": pandas_change, "slopes": pandas_slopes, "cohort": pandas_cohort}
TARGETS = {"change_from_baseline": 1.5, "slopes": 2.0, "cohort": 2.0}


def contend(folder: Path, helper: str, side: str, repeat: int) -> dict:
    """One contender in this process: best CPU and wall of `repeat` runs, rows, peak memory. "computed" runs
    without the user's cache; "kept" with a cache of its own that a first run (not timed) fills: what
    another process at the same study version pays (`Study._make_records`)."""
    if side != "pandas":
        import scipy.special  # noqa: F401 - a library ours computes with (its intervals), imported first as pandas is
        cache = tempfile.mkdtemp(prefix="skb-cache-") if side == "kept" else "off"
        os.environ["SKINTRACK_CACHE"] = cache
        if side == "kept":
            getattr(skintrack.open(folder), helper)("score.water")
    best = (float("inf"), float("inf"), 0)
    for _ in range(repeat):
        if side != "pandas":  # a study opened afresh each time (not timed): no result held from the last run
            s = skintrack.open(folder)
            s.visits  # noqa: B018
            work = lambda: getattr(s, helper)("score.water")  # noqa: E731
        else:
            work = lambda: HELPERS[helper](folder, "water")  # noqa: E731
        c0, w0 = time.process_time(), time.perf_counter()
        out = work()
        best = min(best, (time.process_time() - c0, time.perf_counter() - w0, len(out)))
        del out
    if side == "kept":
        shutil.rmtree(cache, ignore_errors=True)
    return {"cpu": best[0], "wall": best[1], "rows": best[2], "peak": peak_bytes()}


def peak_bytes() -> int:
    """This process's peak resident memory since it started: VmHWM, not getrusage's ru_maxrss, which Linux
    carries across exec from the parent (the builder of the study, 1.4 GiB, would be every contender's peak)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=100_000)
    ap.add_argument("--visits", type=int, default=10)
    ap.add_argument("--keep")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs for each contender")
    ap.add_argument("--contend", nargs=2, metavar=("HELPER", "SIDE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.contend:
        print(json.dumps(contend(Path(args.keep), *args.contend, args.repeat)))
        return
    folder = Path(args.keep or tempfile.mkdtemp(prefix="skb-study-"))
    try:
        if not store.is_study(folder):
            t0 = time.perf_counter()
            build(folder, args.subjects, args.visits)
            print(f"built a SIMULATED study of {args.subjects * args.visits:,} analyses in {time.perf_counter() - t0:.1f} s")
        print("| helper | skintrack CPU | pandas CPU | CPU ratio | wall: skintrack / pandas | wall ratio | peak MiB: "
              "skintrack / pandas | rows | target (CPU) | met |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for helper in HELPERS:
            for side in ("computed", "kept"):  # each run in turn with a run of pandas
                got = {}
                for who in (side, "pandas"):
                    out = subprocess.run([sys.executable, __file__, "--keep", str(folder), "--repeat", str(args.repeat),
                                          "--contend", helper, who], check=True, capture_output=True, text=True).stdout
                    got[who] = json.loads(out.strip().splitlines()[-1])
                ours, theirs = got[side], got["pandas"]
                assert ours["rows"] == theirs["rows"], (helper, ours["rows"], theirs["rows"])
                ratio = theirs["cpu"] / ours["cpu"]
                print(f"| {helper}, {side} | {ours['cpu']:.2f} s | {theirs['cpu']:.2f} s | {ratio:.2f}x | "
                      f"{ours['wall']:.2f} / {theirs['wall']:.2f} s | {theirs['wall'] / ours['wall']:.2f}x | "
                      f"{ours['peak'] / 2**20:.0f} / {theirs['peak'] / 2**20:.0f} | {ours['rows']:,} | "
                      f">= {TARGETS[helper]:g}x | {'yes' if ratio >= TARGETS[helper] else 'NO'} |")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Store benchmark: a study fed one response at a time, opening it, and the session index at scale.

Three measurements, each next to a peer measured in the same run:

1. `--ingests` single-response ingests into one study (SIMULATED responses: the sample trial's, each made
   distinct). Target: the last ingests take at most 1.5x the first (median of the first and of the last
   `--window`). Peer: the same loop on the batch-folder store this replaced (skintrack at `--old`, checked
   out into a temporary git worktree), for `--old-ingests` ingests.
2. Opening the study after that history, plus a first query (`count(*)` of analyses), in a fresh process
   state. Target: under 0.3 s. Peer: the old store after its shorter history.
3. The session index at `--analyses` analyses (a study built straight into the lake): open plus
   `Study.visits`. Target: under 0.3 s. Peer: building the index from the sessions as the old store did,
   on the same data.

    python benchmarks/store.py [--ingests 1000] [--old 3597e9d] [--old-ingests 200] [--analyses 1000000]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
LOOP = r"""
import json, sys, time
from pathlib import Path
import skintrack
from skintrack.tables.ingest import ingest
files, study = sorted(Path(sys.argv[1]).glob("*.json")), Path(sys.argv[2])
times = []
for f in files:
    t0 = time.perf_counter()
    ingest([f], study)
    times.append(time.perf_counter() - t0)
t0 = time.perf_counter()
n = skintrack.open(study).sql("select count(*) n from analyses")["n"].iloc[0]
opened = time.perf_counter() - t0
print(json.dumps({"times": times, "open": opened, "n": int(n)}))
"""


def corpus(folder: Path, n: int) -> Path:
    """n distinct SIMULATED responses (the sample trial's, with a distinct request id each)."""
    from skintrack.sample import sample_study_dir

    base = sorted((sample_study_dir() / "responses").glob("*.json"))
    folder.mkdir(parents=True)
    for i in range(n):
        doc = orjson.loads(base[i % len(base)].read_bytes())
        doc["request_id"] = f"bench-{i}"
        (folder / f"r{i:05d}.json").write_bytes(orjson.dumps(doc))
    return folder


def run_loop(files: Path, study: Path, pythonpath: Path | None = None) -> dict:
    env = {"PYTHONPATH": str(pythonpath)} if pythonpath else {}
    import os

    out = subprocess.run([sys.executable, "-c", LOOP, str(files), str(study)], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def summary(name: str, res: dict, window: int) -> tuple[float, float]:
    first, last = statistics.median(res["times"][:window]), statistics.median(res["times"][-window:])
    print(f"{name:28s} {len(res['times']):6d} {first * 1000:9.1f} {last * 1000:9.1f} {last / first:7.2f} "
          f"{max(res['times']) * 1000:9.1f} {res['open']:8.3f}")
    return first, last


def session_index(analyses: int, tmp: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import duckdb

    import skintrack
    from study import build
    from skintrack.tables import store

    folder = tmp / "big"
    t0 = time.perf_counter()
    build(folder, analyses // 10, 10)
    print(f"\nbuilt a SIMULATED study of {analyses:,} analyses in {time.perf_counter() - t0:.1f} s")
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        s = skintrack.open(folder)
        visits = s.visits
        best = min(best, time.perf_counter() - t0)
        del s
    con = duckdb.connect()
    peer = tmp / "big" / "peer"
    old_index = f"""CREATE OR REPLACE TEMP TABLE session_index AS
        SELECT *, date_diff('second', min(taken_at) OVER (PARTITION BY subject_id), taken_at) / 86400.0 AS days,
               row_number() OVER (PARTITION BY subject_id ORDER BY taken_at, visit, analysis_id) AS seq
        FROM (SELECT * FROM read_parquet('{peer}/sessions.parquet')
              QUALIFY row_number() OVER (PARTITION BY analysis_id ORDER BY assigned_at DESC) = 1)"""
    t_peer = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        con.execute(old_index)
        con.sql("SELECT visit, median(days) FROM session_index GROUP BY visit").fetchall()
        t_peer = min(t_peer, time.perf_counter() - t0)
    print(f"{'session index':28s} open + visits {best:.3f} s (target < 0.3 s; {len(visits)} visits); "
          f"peer, built from the sessions as before: {t_peer:.3f} s ({t_peer / best:.1f}x)")
    assert store.is_study(folder)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ingests", type=int, default=1000)
    ap.add_argument("--window", type=int, default=20, help="ingests in the first and last medians")
    ap.add_argument("--old", default="3597e9d", help="git revision of the batch-folder store ('' to skip)")
    ap.add_argument("--old-ingests", type=int, default=200)
    ap.add_argument("--analyses", type=int, default=1_000_000, help="size of the session-index study (0 to skip)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="skb-store-"))
    try:
        files = corpus(tmp / "in", args.ingests)
        print(f"{'store':28s} {'ingests':>6s} {'first ms':>9s} {'last ms':>9s} {'ratio':>7s} {'max ms':>9s} {'open s':>8s}")
        now = run_loop(files, tmp / "lake-study")
        first, last = summary("DuckLake (this version)", now, args.window)
        if args.old:
            tree = tmp / "old-tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.old],
                           check=True, capture_output=True)
            try:
                old_files = corpus(tmp / "in-old", args.old_ingests)
                old = run_loop(old_files, tmp / "batch-study", pythonpath=tree)
                summary(f"batch folders ({args.old})", old, args.window)
                at = min(args.old_ingests, len(now["times"])) - 1
                print(f"at ingest {at + 1}: this version {now['times'][at] * 1000:.1f} ms, batch folders "
                      f"{old['times'][at] * 1000:.1f} ms ({old['times'][at] / now['times'][at]:.1f}x)")
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
        print(f"targets: last/first {last / first:.2f} (<= 1.5), open + first query {now['open']:.3f} s (< 0.3 s)")
        if args.analyses:
            session_index(args.analyses, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

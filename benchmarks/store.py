"""Store benchmark: a study fed one response at a time, opening it, and the session index at scale.

Three measurements, each next to a peer measured in the same run:

1. `--ingests` single-response ingests into one study (SIMULATED responses: the sample trial's, each made
   distinct). Target: the last ingests take at most 1.5x the first (median of the first and of the last
   `--window`). Peer: the same loop on the batch-folder store this replaced (skintrack at `--old`, checked
   out into a temporary git worktree), for `--old-ingests` ingests.
2. Opening the study after that history, plus a first query (`count(*)` of analyses), with the modules
   imported (importing them does not depend on the study). Target: under 0.3 s. Peer: the old store after
   its shorter history.
3. The session index at `--analyses` analyses (a study built straight into the lake): open plus
   `Study.visits`, modules imported, best of 3. Target: under 0.3 s. Peer: the old code on the same
   tables in its layout (one batch folder), which builds the index at open.

    python benchmarks/store.py [--ingests 1000] [--old 3597e9d] [--old-ingests 200] [--analyses 1000000]
"""
from __future__ import annotations

import argparse
import json
import os
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
import skintrack.analysis.study  # imported before the clock starts: importing does not depend on the study
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
    """The ingest loop in a fresh process (the code at `pythonpath`, or this checkout's)."""
    env = {**os.environ, **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    out = subprocess.run([sys.executable, "-c", LOOP, str(files), str(study)], capture_output=True, text=True,
                         env=env, check=True, cwd=study.parent)  # not this checkout: -c imports from the cwd
    return json.loads(out.stdout.splitlines()[-1])


def summary(name: str, res: dict, window: int) -> tuple[float, float]:
    first, last = statistics.median(res["times"][:window]), statistics.median(res["times"][-window:])
    print(f"{name:28s} {len(res['times']):6d} {first * 1000:9.1f} {last * 1000:9.1f} {last / first:7.2f} "
          f"{max(res['times']) * 1000:9.1f} {res['open']:8.3f}")
    return first, last


OPEN_VISITS = r"""
import sys, time
import skintrack.analysis.study as st
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    visits = st.open(sys.argv[1]).visits
    best = min(best, time.perf_counter() - t0)
print(best, len(visits))
"""


def open_visits(folder: Path, pythonpath: Path | None = None) -> tuple[float, int]:
    """Best of 3: open the study and read its visits (the session index), modules already imported."""
    env = {**os.environ, **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    out = subprocess.run([sys.executable, "-c", OPEN_VISITS, str(folder)], capture_output=True, text=True, env=env,
                         check=True, cwd=folder.parent).stdout.strip().splitlines()[-1].split()  # after any progress bar
    return float(out[0]), int(out[1])


def session_index(analyses: int, tmp: Path, old_tree: Path | None) -> float:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from study import build

    folder = tmp / "big"
    t0 = time.perf_counter()
    build(folder, analyses // 10, 10)
    print(f"\nbuilt a SIMULATED study of {analyses:,} analyses in {time.perf_counter() - t0:.1f} s")
    ours, n = open_visits(folder)
    line = f"{'session index':28s} open + visits {ours:.3f} s ({n} visits)"
    if old_tree:  # the same tables in the old layout: one batch folder, the index built at open
        old = tmp / "big-old" / "batches" / "bench"
        old.mkdir(parents=True)
        for f in (folder / "peer").glob("*.parquet"):
            shutil.copy(f, old / f.name)
        theirs, _ = open_visits(tmp / "big-old", old_tree)
        line += f"; batch folders: {theirs:.3f} s ({theirs / ours:.1f}x slower)"
    print(line)
    return ours


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ingests", type=int, default=1000)
    ap.add_argument("--window", type=int, default=20, help="ingests in the first and last medians")
    ap.add_argument("--old", default="3597e9d", help="git revision of the batch-folder store ('' to skip)")
    ap.add_argument("--old-ingests", type=int, default=200)
    ap.add_argument("--analyses", type=int, default=1_000_000, help="size of the session-index study (0 to skip)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="skb-store-"))
    tree = tmp / "old-tree" if args.old else None
    try:
        if tree:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.old],
                           check=True, capture_output=True)
        files = corpus(tmp / "in", args.ingests)
        print(f"{'store':28s} {'ingests':>6s} {'first ms':>9s} {'last ms':>9s} {'ratio':>7s} {'max ms':>9s} {'open s':>8s}")
        now = run_loop(files, tmp / "lake-study")
        first, last = summary("DuckLake (this version)", now, args.window)
        if tree:
            old = run_loop(corpus(tmp / "in-old", args.old_ingests), tmp / "batch-study", pythonpath=tree)
            summary(f"batch folders ({args.old})", old, args.window)
            at = min(args.old_ingests, len(now["times"])) - 1
            print(f"at ingest {at + 1}: this version {now['times'][at] * 1000:.1f} ms, batch folders "
                  f"{old['times'][at] * 1000:.1f} ms ({old['times'][at] / now['times'][at]:.1f}x)")
        index = session_index(args.analyses, tmp, tree) if args.analyses else float("nan")
        print(f"\ntargets: last/first {last / first:.2f} (<= 1.5); open + first query after {len(now['times'])} "
              f"ingests {now['open']:.3f} s (< 0.3 s); session index at {args.analyses:,} analyses {index:.3f} s "
              "(< 0.3 s)")
    finally:
        if tree:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    main()

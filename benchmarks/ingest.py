"""Ingest benchmark: skintrack against its peers on the same corpus, in one run.

The corpus jitters the real recorded responses in tests/fixtures/real (decimal numbers perturbed within their
documented ranges, request ids made unique; sizes, shapes, versions and every whole number kept), with and
without face maps. Each contender runs in its own process; peak memory is the largest total RSS of that
process and its children, sampled from /proc.

    python benchmarks/ingest.py [--n 2000] [--n-maps 300] [--keep DIR]

Peers: (a) orjson.loads of every file and nothing else, (b) pandas.json_normalize of them into one wide
Parquet file, (c) DuckDB read_json_auto into Parquet (objects up to 16 MB; the largest response here is about
3 MB). Figures are responses per second (wall) and CPU seconds (the process and its workers); imports are
not timed. Then where skintrack's ingest spends its CPU (reading and parsing the JSON, `flatten`, the rest:
Arrow tables, Parquet and the commit), and what one response costs to add to a study that exists.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "tests" / "fixtures" / "real"


def _jitter(node, rng):
    if isinstance(node, dict):
        return {k: _jitter(v, rng) for k, v in node.items()}
    if isinstance(node, list):
        return [_jitter(v, rng) for v in node]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return node
    if isinstance(node, int):  # grades, classes and counts: the API's documented values, kept
        return node
    value = round(node * rng.uniform(0.95, 1.05), 6)
    return min(value, 1.0) if 0 <= node <= 1 else min(value, 100.0) if 0 <= node <= 100 else value


def make_corpus(folder: Path, n: int, maps: bool, seed: int) -> int:
    """Write `n` jittered responses; returns the total bytes."""
    rng = random.Random(seed)
    sources = sorted(REAL.rglob("*.json"))
    if maps:
        sources = [p for p in sources if b'"face_maps"' in p.read_bytes()]
    docs = []
    for p in sources:
        d = orjson.loads(p.read_bytes())
        if not maps and isinstance(d.get("result"), dict):
            d["result"].pop("face_maps", None)
        docs.append(d)
    folder.mkdir(parents=True)
    total = 0
    for i in range(n):
        d = _jitter(docs[i % len(docs)], rng)
        d["request_id"] = f"bench-{seed}-{i}"
        data = orjson.dumps(d, option=orjson.OPT_INDENT_2)
        (folder / f"r{i:05d}.json").write_bytes(data)
        total += len(data)
    return total


# Each contender: imports (not timed), then the timed work.
PEERS = {
    "orjson.loads only": """
        import glob, orjson
        # --- timed ---
        for p in sorted(glob.glob(CORPUS + "/*.json")):
            with open(p, "rb") as fh:
                orjson.loads(fh.read())
    """,
    "pandas.json_normalize -> Parquet": """
        import glob, orjson, pandas as pd
        # --- timed ---
        docs = []
        for p in sorted(glob.glob(CORPUS + "/*.json")):
            with open(p, "rb") as fh:
                docs.append(orjson.loads(fh.read()))
        df = pd.json_normalize(docs)
        for c in df.columns[df.dtypes == object]:
            df[c] = [v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in df[c]]
        df.to_parquet(OUT + "/wide.parquet")
    """,
    "duckdb read_json_auto -> Parquet": """
        import duckdb
        # --- timed ---
        duckdb.sql(f"COPY (SELECT * FROM read_json_auto('{CORPUS}/*.json', union_by_name = true, "
                   f"maximum_object_size = 16777216)) TO '{OUT}/duck.parquet' (FORMAT parquet)")
    """,
    "skintrack ingest (1 worker)": """
        import skintrack
        # --- timed ---
        r = skintrack.ingest([CORPUS], OUT + "/study", workers=1)
        assert r.added == N and not r.rejected, r
    """,
    "skintrack ingest (2 workers)": """
        import skintrack
        # --- timed ---
        r = skintrack.ingest([CORPUS], OUT + "/study", workers=2)
        assert r.added == N and not r.rejected, r
    """,
}
PHASES = """
    import glob, time, orjson, skintrack
    from skintrack.tables.flatten import flatten
    # --- timed ---
    files = sorted(glob.glob(CORPUS + "/*.json"))
    parse = flat = 0.0
    for p in files:  # one response at a time, as the ingest reads them
        c0 = time.process_time()
        with open(p, "rb") as fh:
            doc = orjson.loads(fh.read())
        c1 = time.process_time()
        flatten(doc)
        parse, flat = parse + c1 - c0, flat + time.process_time() - c1
    c2 = time.process_time()
    r = skintrack.ingest([CORPUS], OUT + "/study", workers=1)
    c3 = time.process_time()
    one = skintrack.ingest([files[0]], OUT + "/one", workers=1)  # a new study's first response
    c4, w4 = time.process_time(), time.perf_counter()
    more = skintrack.ingest([files[1]], OUT + "/one", workers=1)  # one more, into a study that exists
    c5, w5 = time.process_time(), time.perf_counter()
    assert r.added == N and one.added == 1 and more.added == 1
    print("PHASES", parse, flat, c3 - c2, c4 - c3, c5 - c4, w5 - w4)
"""


def _tree_rss(pid: int) -> int:
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) * 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


def run(code: str, corpus: Path, n: int) -> tuple[float, int, str, float, list]:
    """Run a contender in a fresh process; returns (seconds, peak tree RSS in bytes, error or '', CPU seconds,
    the numbers it printed after PHASES)."""
    out = Path(tempfile.mkdtemp(prefix="skb-out-"))
    setup, timed = textwrap.dedent(code).split("# --- timed ---")
    script = (f"CORPUS, OUT, N = {str(corpus)!r}, {str(out)!r}, {n}\nimport resource, time\n{setup}\n"
              "def _cpu():\n    return sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, "
              "resource.RUSAGE_CHILDREN) for f in ('ru_utime', 'ru_stime'))\n"
              f"_t, _c = time.perf_counter(), _cpu()\n{timed}\nprint('SECONDS', time.perf_counter() - _t, _cpu() - _c)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0

    def sample():
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        lines = [line for line in stderr.splitlines() if "Error" in line] or ["failed"]
        return float("nan"), peak, lines[-1].strip(), float("nan"), []
    seconds, cpu = map(float, next(line.split()[1:] for line in stdout.splitlines() if line.startswith("SECONDS")))
    phases = [float(x) for line in stdout.splitlines() if line.startswith("PHASES") for x in line.split()[1:]]
    return seconds, peak, "", cpu, phases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="responses without maps")
    ap.add_argument("--n-maps", type=int, default=300, help="responses with face maps (about 1.5 MB each)")
    ap.add_argument("--keep", help="keep the corpora in this folder")
    args = ap.parse_args()
    base = Path(args.keep or tempfile.mkdtemp(prefix="skb-corpus-"))
    try:
        for label, n, maps in (("without maps", args.n, False), ("with maps", args.n_maps, True)):
            corpus = base / ("maps" if maps else "plain")
            if not corpus.exists():
                size = make_corpus(corpus, n, maps, seed=7 if maps else 3)
            else:
                size = sum(p.stat().st_size for p in corpus.glob("*.json"))
            print(f"\n== corpus {label}: {n} responses, {size / 2**20:.0f} MiB (jittered real fixtures) ==")
            for p in corpus.glob("*.json"):  # warm the page cache: every contender reads the same warm files
                p.read_bytes()
            print(f"{'contender':36s} {'resp/s':>9s} {'MiB/s':>8s} {'x orjson':>9s} {'CPU s':>7s} {'CPU x orjson':>12s} "
                  f"{'peak MiB':>9s}")
            results = {}
            ref = min((run(PEERS["orjson.loads only"], corpus, n) for _ in range(2)), key=lambda r: r[0])
            for name, code in PEERS.items():
                seconds, peak, err, cpu, _ = ref if name == "orjson.loads only" else run(code, corpus, n)
                results[name] = seconds
                if err:
                    print(f"{name:36s} {'failed':>9s} {'':8s} {'':9s} {'':7s} {'':12s} {peak / 2**20:9.0f}   ({err[:90]})")
                    continue
                print(f"{name:36s} {n / seconds:9.0f} {size / 2**20 / seconds:8.1f} {ref[0] / seconds:9.2f} "
                      f"{cpu:7.2f} {ref[3] / cpu:12.2f} {peak / 2**20:9.0f}")
            one, two = results["skintrack ingest (1 worker)"], results["skintrack ingest (2 workers)"]
            print(f"speed-up with 2 workers: {one / two:.2f}x")
            parse, flat, whole, first, more, more_wall = run(PHASES, corpus, n)[4]
            rest = whole - parse - flat
            print(f"skintrack ingest, 1 worker, CPU {whole:.2f} s: reading and parsing the JSON {parse / whole:.0%}, "
                  f"flatten {flat / whole:.0%}, Arrow tables, Parquet and the commit {rest / whole:.0%}; "
                  f"flatten alone runs at {ref[3] / flat:.2f}x orjson's CPU")
            print(f"one response: into a new study {first:.2f} s CPU; into a study that exists {more:.2f} s CPU, "
                  f"{more_wall:.2f} s wall")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Each benchmark quick enough to run small does run, at a tiny size, and prints its rows: their full runs
are the benchmarks (DEVELOPERS.md), and one stopped running unseen once (analyze.py, when the emulator's
--api-key left argv). The figures at these sizes mean nothing; whether each benchmark still works does."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.parametrize("script, args, rows", [
    ("analyze.py", ["--latency", "0.05", "--latency-spread", "0", "--rounds", "1", "--concurrency", "1", "2"],
     [["1", "8"], ["2", "8"]]),  # concurrency, calls: every call answered (the benchmark checks each)
    ("store.py", ["--ingests", "6", "--window", "2", "--old", "", "--analyses", "0"], [["DuckLake", "(this"]]),
    ("mmrm.py", ["--subjects", "10", "--visits", "3", "--repeat", "1"], [["|", "R"], ["|", "skintrack"]]),
    ("study.py", ["--subjects", "200", "--visits", "3", "--repeat", "1"],  # it checks both sides' row counts
     [["|", "change_from_baseline,", "computed"], ["|", "slopes,", "kept"], ["|", "cohort,", "computed"]]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_the_benchmark_runs_small(script, args, rows):
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    printed = [line.split() for line in out.stdout.splitlines()]
    assert [row for row in rows if not any(line[:len(row)] == row for line in printed)] == [], out.stdout

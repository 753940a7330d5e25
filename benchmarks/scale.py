"""Scale benchmark: each trend helper on DuckDB and on Spark (local mode, this machine), at 100k and 1M
analyses, and how its time grows with size.

The SIMULATED studies are built straight into the lake (as `benchmarks/study.py` does: subjects x 10
visits, 12 scores each). Every figure is the best of --repeat runs of the helper, result included (a
pandas DataFrame on the driver). Spark's one-off cost of binding a study (`Study.on`) is printed apart.

    python benchmarks/scale.py [--sizes 100000,1000000] [--master local[2]] [--repeat 2]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import skintrack  # noqa: E402
from skintrack.spark.engine import local_session  # noqa: E402
from study import build, timed  # noqa: E402

HELPERS = {
    "timeline": lambda s: s.timeline("score.water"),
    "change_from_baseline": lambda s: s.change_from_baseline("score.water"),
    "slopes": lambda s: s.slopes("score.water"),
    "cohort": lambda s: s.cohort("score.water"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    spark = local_session(args.master, memory="8g")
    tmp = Path(tempfile.mkdtemp(prefix="skb-scale-"))
    times = {}
    try:
        for n in sizes:
            folder = tmp / f"s{n}"
            t, _ = timed(build, folder, n // 10, 10)
            duck = skintrack.open(folder)
            t_bind, on_spark = timed(duck.on, spark)
            print(f"\n{n:,} analyses (SIMULATED, built in {t:.1f} s); Spark binds the study in {t_bind:.1f} s")
            print(f"{'helper':22s} {'DuckDB s':>9s} {'Spark s':>9s} {'Spark/DuckDB':>13s} {'rows':>10s}")
            for name, fn in HELPERS.items():
                t_duck, a = timed(fn, duck, repeat=args.repeat)
                t_spark, b = timed(fn, on_spark, repeat=args.repeat)
                assert len(a) == len(b), (name, len(a), len(b))
                times[name, n] = (t_duck, t_spark)
                print(f"{name:22s} {t_duck:9.3f} {t_spark:9.3f} {t_spark / t_duck:13.1f} {len(a):10,d}")
        if len(sizes) > 1:
            lo, hi = sizes[0], sizes[-1]
            print(f"\ngrowth from {lo:,} to {hi:,} analyses ({hi / lo:.0f}x the data): time ratio")
            for name in HELPERS:
                (d0, s0), (d1, s1) = times[name, lo], times[name, hi]
                print(f"{name:22s} DuckDB {d1 / d0:5.1f}x   Spark {s1 / s0:5.1f}x")
    finally:
        spark.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

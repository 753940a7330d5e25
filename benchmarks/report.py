"""How fast the CLI starts and the report is written, on the SIMULATED demo study (wall time, best of 3).

Targets (issue 12): `skintrack --help` under 0.5 s; `skintrack report` on the demo study under 5 s without
the PDF. Each is a whole command in its own process, as a user runs it; the PDF's time is shown apart.

    .venv/bin/python benchmarks/report.py
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skintrack.demo import ingest_sample

EXE = str(Path(sys.executable).with_name("skintrack"))


def best(cmd, runs=3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ingest_sample(Path(tmp) / "s")
        rows = [("skintrack --help", best([EXE, "--help"]), 0.5),
                ("skintrack report --no-pdf", best([EXE, "report", f"{tmp}/s", "--out", f"{tmp}/r", "--no-pdf"]), 5.0),
                ("skintrack report (with the PDF)", best([EXE, "report", f"{tmp}/s", "--out", f"{tmp}/p"]), None)]
    print("| command | wall time (best of 3) | target |\n|---|---|---|")
    for name, seconds, target in rows:
        print(f"| {name} | {seconds:.2f} s | {'' if target is None else f'< {target:g} s'} |")


if __name__ == "__main__":
    main()

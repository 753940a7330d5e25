"""How fast the commands answer on the SIMULATED demo study, as ratios to peers measured in the same run.

Each command runs whole in its own process, as a user runs it (best of 3; CPU = user + system time of the
process and its children, wall = elapsed). The peers: `python -c "import pandas, duckdb, pyarrow"` (what
any tool on these tables pays to start) and a bare headless-Chromium print of the same report HTML. The
targets (issue 23): `skintrack report --no-pdf` <= 3x the import, `skintrack endpoints` <= 1x, opening a
study and its first helper <= 1.5x, the PDF step (a report with its PDF minus one without) <= 1.5x the bare
print.

    .venv/bin/python benchmarks/report.py
"""
from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skintrack.demo import ingest_sample
from skintrack.show.report import CHROMIUM_FLAGS, chromium

EXE = str(Path(sys.executable).with_name("skintrack"))
PY = sys.executable


def best(cmd, runs=3) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the fastest of `runs` runs of `cmd`, children included."""
    out = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall))
    return min(out)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        study = f"{tmp}/s"
        ingest_sample(Path(study))
        imports = best([PY, "-c", "import pandas, duckdb, pyarrow"])
        report = best([EXE, "report", study, "--out", f"{tmp}/r", "--no-pdf"])
        rows = [("`skintrack --help`", best([EXE, "--help"]), imports, None),
                ("`skintrack report --no-pdf` (HTML and DOCX)", report, imports, 3.0),
                ("`skintrack endpoints`", best([EXE, "endpoints", study]), imports, 1.0),
                ("open + first helper", best([PY, "-c", f"import skintrack; skintrack.open({study!r})"
                                                        ".timeline('score.water')"]), imports, 1.5)]
        html = Path(f"{tmp}/r/report.html").resolve()
        pdf = best([PY, "-c", f"from pathlib import Path; from skintrack.show.report import _pdf; _pdf(Path({str(html)!r}))"])
        bare = best([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile", "--no-pdf-header-footer",
                     f"--print-to-pdf={tmp}/bare.pdf", html.as_uri()])
        with_pdf = best([EXE, "report", study, "--out", f"{tmp}/p"])
        step = (with_pdf[0] - report[0], with_pdf[1] - report[1])
        rows.append(("the PDF step (`report` with the PDF minus without)", step, bare, 1.5))
        rows.append(("skintrack's print alone (a python start and the report module's imports included)", pdf, bare, None))
    print(f"peers: import pandas, duckdb, pyarrow {imports[0]:.2f} s CPU, {imports[1]:.2f} s wall; bare Chromium "
          f"print {bare[0]:.2f} s CPU, {bare[1]:.2f} s wall\n")
    print("| command | CPU | wall | CPU ratio to its peer | wall ratio | target (CPU ratio) | met |")
    print("|---|---|---|---|---|---|---|")
    for name, (cpu, wall), (peer_cpu, peer_wall), target in rows:
        ratio = cpu / peer_cpu
        print(f"| {name} | {cpu:.2f} s | {wall:.2f} s | {ratio:.2f}x | {wall / peer_wall:.2f}x | "
              f"{'' if target is None else f'<= {target:g}x'} | "
              f"{'' if target is None else 'yes' if ratio <= target else 'NO'} |")


if __name__ == "__main__":
    main()

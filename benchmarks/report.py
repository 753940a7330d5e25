"""How fast the commands answer on the SIMULATED demo study, as ratios to peers measured in the same run.

Each command runs whole in its own process, as a user runs it (best of 5, each run in turn with a run of
its peer; CPU = user + system time of the process and its children, wall = elapsed). The peers: `python -c
"import pandas, duckdb, pyarrow"` (what any tool on these tables pays to start) and a bare headless-Chromium
print of the same report HTML. The
targets (issue 23): `skintrack report --no-pdf` <= 3x the import, `skintrack endpoints` <= 1x, opening a
study and its first helper <= 1.5x, the PDF step (skintrack printing the HTML, timed inside a process that
has started) <= 1.5x the bare print.

The computing commands keep their output per study version (`skintrack.kept`), so each is measured twice:
computed (`--fresh`: what the first run after any change costs) and answered again (the same command on the
same study version, plan and skintrack, what a user re-running it pays). A process opening a study loads
DuckDB's extension files without their signature check once DuckDB has verified those very files
(`skintrack.tables.extensions`); the first run after an install pays the check, the best of 5 does not.

    .venv/bin/python benchmarks/report.py
"""
from __future__ import annotations

import functools
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import skintrack
from skintrack.demo import ingest_sample
from skintrack.show.report import CHROMIUM_FLAGS, chromium

EXE = str(Path(sys.executable).with_name("skintrack"))
PY = sys.executable


def timed(cmd) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of `cmd`, children included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def against(ours, peer, runs=5) -> tuple:
    """(best (CPU, wall) of `ours`, best of `peer`), each called `runs` times in turn with the other: a shared
    host that speeds up or slows down during the run moves both."""
    got = [(ours(), peer()) for _ in range(runs)]
    return min(g[0] for g in got), min(g[1] for g in got)


PDF_STEP = """
import resource, sys, time
from pathlib import Path
from skintrack.show.report import _pdf

def cpu():
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))

c0, t0 = cpu(), time.perf_counter()
_pdf(Path(sys.argv[1]))
print(cpu() - c0, time.perf_counter() - t0)
"""


def pdf_step(html: Path) -> tuple[float, float]:
    """(CPU, wall) of skintrack's PDF step alone: `_pdf` timed inside a process that has already started and
    imported the report module."""
    done = subprocess.run([PY, "-c", PDF_STEP, str(html)], check=True, capture_output=True, text=True)
    return tuple(map(float, done.stdout.split()))


IMPORTED = """
import runpy, sys
sys.argv = ["skintrack", *sys.argv[1:]]
try:
    runpy.run_module("skintrack.cli", run_name="__main__")
except SystemExit:
    pass
print(" ".join(m for m in sys.modules if m.partition(".")[0] not in {"skintrack", "__main__", "runpy"}))
"""


def imports_of(cmd: list[str]) -> list[str]:
    """Every module a skintrack command imports (its own excepted), in the order it imported them."""
    done = subprocess.run([PY, "-c", IMPORTED, *cmd[1:]], check=True, capture_output=True, text=True)
    return done.stdout.splitlines()[-1].split()


# as skintrack's CLI starts (skintrack/cli.py): one OpenBLAS thread, set before numpy loads
CLI_START = "import os\nos.environ.setdefault('OPENBLAS_NUM_THREADS', '1')\n"


def importing(modules: list[str]) -> list[str]:
    """A command that starts as skintrack's CLI does, imports `modules` in this order and does nothing else;
    scipy.special's ufuncs, where the command loaded them without their package, are loaded as
    `skintrack.analysis.dist` does."""
    ufuncs_alone = "scipy.special._ufuncs" in modules and "scipy.special" not in modules
    listed = [m for m in modules if not (ufuncs_alone and m.startswith("scipy.special."))]
    then = "\nfrom skintrack.analysis import dist\ndist._special()" if ufuncs_alone else ""
    return [PY, "-c", f"{CLI_START}import importlib\nfor m in {listed!r}:\n    importlib.import_module(m){then}"]


def main() -> None:
    # skintrack's bytecode compiled first, as pip compiles an installed package's (the peers' is): an editable
    # install under PYTHONDONTWRITEBYTECODE would otherwise compile every module at every start
    subprocess.run([PY, "-m", "compileall", "-q", str(Path(skintrack.__file__).parent)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SKINTRACK_CACHE"] = f"{tmp}/kept"
        study = f"{tmp}/s"
        ingest_sample(Path(study))
        subprocess.run([EXE, "history", study], check=True, capture_output=True)  # the plan kept as a version
        imports = functools.partial(timed, [PY, "-c", "import pandas, duckdb, pyarrow"])
        commands = [("`skintrack --help`", [EXE, "--help"], None),
                    ("`skintrack report --no-pdf` (HTML and DOCX), computed",
                     [EXE, "report", study, "--out", f"{tmp}/r", "--no-pdf", "--fresh"], 3.0),
                    ("`skintrack report --no-pdf`, answered again", [EXE, "report", study, "--out", f"{tmp}/r",
                                                                     "--no-pdf"], 3.0),
                    ("`skintrack endpoints`, computed", [EXE, "endpoints", study, "--fresh"], 1.0),
                    ("`skintrack endpoints`, answered again", [EXE, "endpoints", study], 1.0),
                    ("open + first helper", [PY, "-c", f"import skintrack; skintrack.open({study!r})"
                                                       ".timeline('score.water')"], 1.5)]
        # what no rewrite of the work can save: each computing command's imports alone, and the least a pandas-free
        # endpoints would import (the distributions must equal scipy's, tests/test_dist.py)
        commands += [(f"{name.split(',')[0]}: its imports alone, no work", importing(imports_of(cmd)), None)
                     for name, cmd, _ in commands if name.endswith("computed")]
        commands.append(("the peer started as the CLI starts (one OpenBLAS thread: numpy's pool of spinning threads "
                         "is a quarter of the peer's CPU)", [PY, "-c", f"{CLI_START}import pandas, duckdb, pyarrow"], None))
        commands.append(("numpy, duckdb and scipy's ufuncs as `dist` loads them (endpoints without pandas or pyarrow)",
                         [PY, "-c", f"{CLI_START}import duckdb\nfrom skintrack.analysis import dist\ndist._special()"],
                         None))
        rows = [(name, *against(functools.partial(timed, cmd), imports), target) for name, cmd, target in commands]
        html = Path(f"{tmp}/r/report.html").resolve()
        bare = functools.partial(timed, [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile",
                                         "--no-pdf-header-footer", f"--print-to-pdf={tmp}/bare.pdf", html.as_uri()])
        rows.append(("the PDF step (skintrack printing the report's HTML, in its process)",
                     *against(functools.partial(pdf_step, html), bare), 1.5))
    print("Peers: `import pandas, duckdb, pyarrow` for the commands, a bare Chromium print of the same HTML for the "
          "PDF step; each row's peer ran in turn with it.\n")
    print("| command | CPU | wall | peer CPU | peer wall | CPU ratio | wall ratio | target (CPU ratio) | met |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (cpu, wall), (peer_cpu, peer_wall), target in rows:
        ratio = cpu / peer_cpu
        print(f"| {name} | {cpu:.2f} s | {wall:.2f} s | {peer_cpu:.2f} s | {peer_wall:.2f} s | {ratio:.2f}x | "
              f"{wall / peer_wall:.2f}x | {'' if target is None else f'<= {target:g}x'} | "
              f"{'' if target is None else 'yes' if ratio <= target else 'NO'} |")


if __name__ == "__main__":
    main()

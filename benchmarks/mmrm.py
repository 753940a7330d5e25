"""MMRM speed against R's `nlme::gls` on the same SIMULATED trial, in one run.

The trial: 3 arms x 200 subjects, baseline and 6 post-baseline visits whose SDs grow from 2 to 7
(correlated 0.7 per visit apart), MAR dropout (a subject whose last change is negative leaves with
probability 10%, others with 2%). Both fit the same model: change ~ baseline + arm * visit, unstructured
covariance (R: `corSymm` + `varIdent`), REML, from the same CSV.

* R: `gls(...)` alone, timed inside one R process (R's start not counted): nlme's default optimiser
  (nlminb), best of --repeat fits. R gives no degrees of freedom here; emmeans would add its own time.
* skintrack: `fit_mmrm` whole, as a report calls it: the REML fit, then Kenward-Roger degrees of freedom
  and adjusted covariance, LS-means and differences at every visit (more work than `gls`), best of --repeat.

It checks that both reach the same optimum (every treatment difference at every visit to 1e-4 of its
standard error) and prints CPU and wall times and their ratios. The target
(issue 23): skintrack at least 5x faster than `gls` (CPU).

    .venv/bin/python benchmarks/mmrm.py [--subjects 200] [--visits 6] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from skintrack.analysis.mmrm import fit_mmrm

ARMS = ("placebo", "low", "high")
R_FIT = r"""
suppressMessages(library(nlme))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], stringsAsFactors = FALSE)
visits <- readLines(args[2])
d$arm <- factor(d$arm, levels = c("placebo", "low", "high"))
d$visit <- factor(d$visit, levels = visits)
d$vis <- as.integer(d$visit)
d <- d[order(d$subject, d$vis), ]
fit1 <- function() gls(chg ~ base + arm * visit, data = d, correlation = corSymm(form = ~ vis | subject),
                       weights = varIdent(form = ~ 1 | visit), method = "REML")
best <- c(Inf, Inf)
for (i in seq_len(as.integer(args[3]))) {
  t <- system.time(fit <- fit1())
  cpu <- t[["user.self"]] + t[["sys.self"]]
  if (cpu < best[1]) best <- c(cpu, t[["elapsed"]])
}
b <- coef(fit)
diff <- function(arm) sapply(seq_along(visits), function(j) b[[paste0("arm", arm)]] +
  if (j > 1) b[[paste0("arm", arm, ":visit", visits[j])]] else 0)
cat(sprintf('{"cpu": %.6f, "wall": %.6f, "low": [%s], "high": [%s]}\n', best[1], best[2],
            paste(sprintf("%.12f", diff("low")), collapse = ","), paste(sprintf("%.12f", diff("high")), collapse = ",")))
"""


def simulate(subjects: int, visits: int, seed: int = 1) -> pd.DataFrame:
    """The SIMULATED trial: subject, arm, visit, base, chg (observed post-baseline rows)."""
    rng = np.random.default_rng(seed)
    sd = np.r_[3.0, np.linspace(2, 7, visits)]
    cov = 0.7 ** np.abs(np.subtract.outer(range(visits + 1), range(visits + 1))) * np.outer(sd, sd)
    names = [f"W{2 * (j + 1)}" for j in range(visits)]
    rows = []
    for i in range(subjects * len(ARMS)):
        arm = ARMS[i % len(ARMS)]
        y = rng.multivariate_normal(np.full(visits + 1, 50.0), cov)
        gain = ARMS.index(arm) * 1.5 * np.arange(1, visits + 1) / visits
        for j, visit in enumerate(names):
            chg = y[j + 1] - y[0] + gain[j]
            rows.append({"subject": f"S{i:04d}", "arm": arm, "visit": visit, "base": y[0], "chg": chg})
            if rng.random() < (0.10 if chg < 0 else 0.02):
                break
    return pd.DataFrame(rows)


def skintrack_fit(data: pd.DataFrame, visits: list, repeat: int):
    """(best CPU, its wall, the fit) of `fit_mmrm` on `data`."""
    best = (np.inf, np.inf, None)
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        fit = fit_mmrm(data, visits, "placebo", structures=["unstructured"], guard=False)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        if cpu < best[0]:
            best = (cpu, wall, fit)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", type=int, default=200, help="per arm")
    ap.add_argument("--visits", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    data = simulate(args.subjects, args.visits)
    visits = [f"W{2 * (j + 1)}" for j in range(args.visits)]
    with tempfile.TemporaryDirectory() as tmp:
        csv, names, script = Path(tmp, "d.csv"), Path(tmp, "visits"), Path(tmp, "fit.R")
        data.to_csv(csv, index=False)
        names.write_text("\n".join(visits) + "\n")
        script.write_text(R_FIT)
        try:
            out = subprocess.run(["Rscript", str(script), str(csv), str(names), str(args.repeat)], check=True,
                                 capture_output=True, text=True).stdout
        except FileNotFoundError:
            raise SystemExit("benchmarks/mmrm.py needs R with nlme (Debian: r-base-core r-cran-nlme; the tests "
                             "install them when missing)") from None
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"R's gls failed: {e.stderr.strip().splitlines()[-1] if e.stderr.strip() else e}") from None
    r = json.loads(out.strip().splitlines()[-1])
    cpu, wall, fit = skintrack_fit(data, visits, args.repeat)
    gap = max(abs(fit.diff(v, t)["estimate"] - r[t][j]) / fit.diff(v, t)["std_error"]
              for t in ("low", "high") for j, v in enumerate(visits))
    print(f"SIMULATED trial: {len(ARMS)} arms x {args.subjects} subjects, {args.visits} post-baseline visits, "
          f"{len(data)} observations; unstructured covariance, REML")
    print(f"same optimum: every treatment difference at every visit within {gap:.1e} standard errors of R's\n")
    print("| fit | CPU | wall | CPU ratio (R / skintrack) | wall ratio | target | met |")
    print("|---|---|---|---|---|---|---|")
    print(f"| R nlme::gls (REML fit only) | {r['cpu']:.3f} s | {r['wall']:.3f} s | | | | |")
    ratio = r["cpu"] / cpu
    print(f"| skintrack fit_mmrm (fit, Kenward-Roger, LS-means, differences) | {cpu:.3f} s | {wall:.3f} s | "
          f"{ratio:.1f}x | {r['wall'] / wall:.1f}x | >= 5x | {'yes' if ratio >= 5 else 'NO'} |")
    if gap > 1e-4:
        raise SystemExit("the two fits did not reach the same optimum: the timing compares different work")


if __name__ == "__main__":
    main()

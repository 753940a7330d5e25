"""A small, fast version of benchmarks/operating.py (SIMULATED 2 x 8 trials with visit SDs 2-6 and MAR dropout):
the default path and a fallback keep near their level where compound symmetry with model-based SEs (what the
old fallback did) rejects far too often, and multiple imputation keeps its level and coverage. The full table,
1,000 replicates per path, is the benchmark's."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))

import operating  # noqa: E402


def test_the_paths_skintrack_takes_keep_their_level_and_the_old_fallback_did_not():
    paths = ("UN, Kenward-Roger (default)", "CSH fallback, CR2", "CS, model-based (never a fallback)")
    rows = [row for seed in range(150) for row in operating.replicate((90_000 + seed, "2 x 8", 0.0, paths))]
    rate = pd.DataFrame(rows).groupby("path")["p"].apply(lambda p: float(np.mean(p < 0.05)))
    assert rate["UN, Kenward-Roger (default)"] <= 0.09 and rate["CSH fallback, CR2"] <= 0.09
    assert rate["CS, model-based (never a fallback)"] >= 0.12


def test_a_small_trial_asking_for_a_liberal_path_is_taken_onto_a_sound_one():
    paths = ("UN, Satterthwaite", "TOEPH fallback, CR2")
    rows = pd.DataFrame([row for seed in range(5) for row in operating.replicate((91_000 + seed, "2 x 8", 0.0, paths))])
    taken = rows.groupby("path")["taken"].agg(set)
    assert taken["UN, Satterthwaite"] == {"unstructured, kenward-roger"}
    assert taken["TOEPH fallback, CR2"] <= {"ar1_h, bell-mccaffrey", "cs_h, bell-mccaffrey"}


def test_multiple_imputation_keeps_its_level_and_its_coverage():
    paths = ("MI under MAR, Rubin", "MI jump to reference")

    def replicates(effect):
        return pd.DataFrame([row for seed in range(60)
                             for row in operating.replicate((93_000 + seed, "2 x 8", effect, paths))])

    null, alt = replicates(0.0), replicates(operating.EFFECT)
    assert not null["failed"].astype(bool).any() and not alt["failed"].astype(bool).any()
    rate = null.groupby("path")["p"].apply(lambda p: float(np.mean(p < 0.05)))
    assert rate["MI under MAR, Rubin"] <= 0.09 and rate["MI jump to reference"] <= 0.09
    mar = alt[alt["path"] == "MI under MAR, Rubin"]
    assert mar["cover"].astype(bool).mean() >= 0.88 and mar["p"].notna().all()

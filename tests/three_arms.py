"""A SIMULATED 3-arm study for the report and export tests: vehicle, low and high dose, 10 subjects each,
visits Baseline, Day14, Day28, Day56. Each response is a sample trial response of the matching visit (D0, W4,
W8, W12) with its hydration severity lowered by the arm's dose (the scores follow by the API's rules:
`severity.water` drives `score.water`); Baseline and Day56 keep the sample's SIMULATED photographs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd

import skintrack
from skintrack.sample import sample_study_dir
from skintrack.tables.plan import Endpoint, Plan, Visit

VISITS = {"Baseline": ("D0", 0), "Day14": ("W4", 14), "Day28": ("W8", 28), "Day56": ("W12", 56)}
ARMS = ("vehicle", "low", "high")  # in the plan's order: the control first, then the doses
DOSE = {"vehicle": 0.0, "low": 8.0, "high": 16.0}  # points of water score gained by Day56 (SIMULATED)


def three_arm_study(folder: Path) -> Path:
    """Write and ingest the study into `folder/study`; returns the study's path."""
    folder, sample = Path(folder), sample_study_dir()
    responses = folder / "responses"
    responses.mkdir(parents=True)
    sample_subjects = pd.read_csv(sample / "subjects.csv").set_index("subject_id")
    rng = np.random.default_rng(56)
    rows, people = [], []
    for i in range(30):
        arm, sid, source = ARMS[i % 3], f"P{i + 1:02d}", f"S{i % 24 + 1:02d}"
        people.append({"subject_id": sid, "arm": arm, "age": int(sample_subjects.at[source, "age"]),
                       "sex": sample_subjects.at[source, "sex"]})
        for visit, (template, day) in VISITS.items():
            doc = orjson.loads((sample / "responses" / f"{source}_{template}.json").read_bytes())
            scores = doc["result"]["score_info"]
            gain = DOSE[arm] * day / 56 + rng.normal(0, 1.0) * (day > 0)
            scores["water_score"] = int(np.clip(round(scores["water_score"] + gain), 0, 100))
            doc["request_id"] = f"SIMULATED-3arm-{sid}-{visit}"
            (responses / f"{sid}_{visit}.json").write_bytes(orjson.dumps(doc))
            meta = sample / "responses" / f"{source}_{template}.meta.json"
            if meta.exists():  # the sample's SIMULATED photograph of that capture, with its SHA-256
                envelope = orjson.loads(meta.read_bytes())
                envelope["photo"] = str((meta.parent / envelope["photo"]).resolve())
                (responses / f"{sid}_{visit}.meta.json").write_bytes(orjson.dumps(envelope))
            rows.append({"file": f"responses/{sid}_{visit}.json", "subject_id": sid, "visit": visit,
                         "taken_at": (pd.Timestamp("2025-01-06") + pd.Timedelta(days=day + i % 2)).strftime("%Y-%m-%d")})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(people).to_csv(folder / "subjects.csv", index=False)
    study = folder / "study"
    skintrack.ingest([responses], study, manifest=folder / "manifest.csv", subjects=folder / "subjects.csv")
    Plan(title="Three-arm dose study (SIMULATED)", sponsor="skintrack tests (SIMULATED)", product="Serum, two doses",
         protocol="SIM-3ARM-01", version="2.0", baseline="Baseline",
         visits=[Visit(v, d, 0 if d == 0 else 3) for v, (_, d) in VISITS.items()], control="vehicle",
         treatments=["low", "high"], primary=Endpoint("score.water", "Day56"),
         secondary=[Endpoint("score.rough", "Day56")], multiplicity="fixed_sequence", arm_comparisons="dunnett",
         illustration={"per_arm": 1, "seed": 3}).write(study)
    return study

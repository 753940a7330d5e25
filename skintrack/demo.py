"""`make demo`: the main job on the embedded SIMULATED sample trial.

Example
-------
>>> import tempfile
>>> print(run_demo(tempfile.mkdtemp()))  # doctest: +ELLIPSIS
Sample trial (SIMULATED): 24 subjects...
"""
from __future__ import annotations

from pathlib import Path

from .ingest import ingest
from .simulate import sample_study_dir
from .study import open as open_study


def demo_study():
    """The sample trial, ingested once per process into a temporary folder, opened (for examples and tests)."""
    global _DEMO
    if _DEMO is None:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="skintrack-demo-"))
        src = sample_study_dir()
        ingest([src / "responses"], folder, manifest=src / "manifest.csv", subjects=src / "subjects.csv")
        _DEMO = open_study(folder)
    return _DEMO


_DEMO = None


def run_demo(study) -> str:
    """Ingest the sample trial into `study` and return a short summary."""
    src = sample_study_dir()
    report = ingest([src / "responses"], study, manifest=src / "manifest.csv", subjects=src / "subjects.csv")
    s = open_study(study)
    n = s.sql("""SELECT count(DISTINCT a.subject_id) AS subjects, count(*) AS analyses,
                 string_agg(DISTINCT a.visit, '/' ORDER BY a.visit) AS visits,
                 (SELECT string_agg(arm || ' ' || k, ', ' ORDER BY arm) FROM
                    (SELECT arm, count(*) AS k FROM subjects GROUP BY arm)) AS arms,
                 (SELECT count(DISTINCT metric) FROM metrics) AS metrics
                 FROM analyses a""").iloc[0]
    visits = "/".join(sorted(n["visits"].split("/"), key=lambda v: (v[0] != "D", int(v[1:]))))
    return (f"Sample trial (SIMULATED): {n['subjects']} subjects ({n['arms']}), visits {visits}, "
            f"{n['analyses']} analyses, {n['metrics']} metrics; this run added {report.added}.\n"
            f"Study folder: {Path(study).resolve()}")

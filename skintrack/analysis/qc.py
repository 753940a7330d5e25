"""Capture-quality checks: which analyses were taken outside the API's limits or unlike their baseline.

Each reason is a flag column. A capture is compared with the subject's capture at the plan's baseline
visit (its earliest there; the subject's earliest capture when there is no baseline visit). The limits
are named defaults (`QCLimits`); every value is bound as a query parameter.

Example
-------
>>> QCLimits().max_yaw
30.0
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import finite
from ..tables.schema import CAPTURE, CAPTURE_SQL

FLAGS = {
    "yaw_out": "head turned more than the API's recommended |yaw| <= 30 deg",
    "pitch_out": "head tilted more than the API's recommended |pitch| <= 40 deg",
    "face_small": "face box side under 400 px",
    "glasses_changed": "glasses worn differently from the subject's baseline",
    "hair_changed": "hair covers the face differently from the baseline",
    "distance_changed": "face takes a different share of the photo than at baseline (camera distance)",
    "abnormal_light": "ITA class 6 or HA class 3 (abnormal lighting)",
    "tone_shift": "whole-face ITA or HA moved beyond the noise floor since baseline (lighting)",
}


@dataclass(frozen=True)
class QCLimits:
    """Thresholds of the capture-quality flags."""

    max_yaw: float = 30.0  # degrees, API recommendation
    max_pitch: float = 40.0  # degrees, API recommendation
    min_face: float = 400.0  # px, side of the face box
    hair_tolerance: float = 0.10  # absolute change of the hair-occluded share
    ratio_tolerance: float = 0.20  # relative change of face_ratio
    ita_noise: float = 8.0  # degrees of ITA
    ha_noise: float = 4.0  # degrees of HA

    def __post_init__(self):  # a NaN limit would flag nothing, silently
        for name, value in asdict(self).items():
            finite(value, f"the QC limit {name}", least=0)

    def params(self) -> dict:
        return {f"qc_{k}": v for k, v in asdict(self).items()}


# a capture's flags from its own columns (the session index holds them: `skintrack.tables.session_index`) and its
# subject's reference (`ref_*`: REFERENCE_SQL); a flag whose inputs are missing is false
FLAG_SQL = {
    "yaw_out": "coalesce(abs(yaw) > $qc_max_yaw, false)",
    "pitch_out": "coalesce(abs(pitch) > $qc_max_pitch, false)",
    "face_small": "coalesce(least(face_width, face_height) < $qc_min_face, false)",
    "glasses_changed": "coalesce(glasses <> ref_glasses, false)",
    "hair_changed": "coalesce(abs(hair_occlusion - ref_hair) > $qc_hair_tolerance, false)",
    "distance_changed": "coalesce(ref_ratio > 0 AND abs(face_ratio / ref_ratio - 1) > $qc_ratio_tolerance, false)",
    "abnormal_light": "coalesce(ita_class = 6 OR ha_class = 3, false)",
    "tone_shift": "coalesce(abs(ita - ref_ita) > $qc_ita_noise OR abs(ha - ref_ha) > $qc_ha_noise, false)",
}
assert FLAG_SQL.keys() == FLAGS.keys()
FLAG_COLUMNS = ", ".join(f"{sql} AS {flag}" for flag, sql in FLAG_SQL.items())
FLAGGED = f"({' OR '.join(FLAGS)})"
REASONS = "concat_ws(', ', " + ", ".join(f"CASE WHEN {f} THEN '{f}' END" for f in FLAGS) + ")"

# each subject's reference capture: the earliest at the plan's baseline visit (or at all, without one); one
# grouped pass over the session index, joined to the captures by subject (`reference_sql`)
REFERENCE_SQL = """
qc_reference AS (
    SELECT ref_subject, q.ref.glasses AS ref_glasses, q.ref.hair AS ref_hair, q.ref.ratio AS ref_ratio,
           q.ref.ita AS ref_ita, q.ref.ha AS ref_ha
    FROM (SELECT subject_id AS ref_subject,
                 arg_min(struct_pack(glasses := glasses, hair := hair_occlusion, ratio := face_ratio, ita := ita,
                                     ha := ha),
                         struct_pack(late := taken_at IS NULL, taken_at := taken_at, ingested_at := ingested_at)) AS ref
          FROM session_index WHERE kind = 'photo' AND coalesce(visit = $qc_baseline, $qc_baseline IS NULL)
          GROUP BY subject_id) q)"""


# the same where no visit holds two photo captures (`Study.several_captures` false) and the baseline is named:
# a subject's one capture at that visit is its reference, read without grouping (at 1M analyses, 7-10% of the
# CPU of a helper's records: benchmarks/study.py)
ONE_CAPTURE_REFERENCE_SQL = """
qc_reference AS (
    SELECT subject_id AS ref_subject, glasses AS ref_glasses, hair_occlusion AS ref_hair, face_ratio AS ref_ratio,
           ita AS ref_ita, ha AS ref_ha
    FROM session_index WHERE kind = 'photo' AND visit = $qc_baseline)"""


def reference_sql(several: bool, baseline: str | None) -> str:
    """The CTE `qc_reference` (ref_subject and the reference's columns) for a study where some visit holds
    `several` captures or not, and the plan's `baseline` visit ($qc_baseline)."""
    return REFERENCE_SQL if several or baseline is None else ONE_CAPTURE_REFERENCE_SQL


def qc_frame(study, limits: QCLimits = QCLimits()):
    """One row per ok analysis: subject, visit, time, a boolean per flag, `flagged` and `reasons` (an analysis
    no session assigns to a subject has no reference, so only the flags of its own capture)."""
    baseline = study.plan.baseline
    return study.sql(f"""WITH {reference_sql(study.several_captures, baseline)},
        rows AS (SELECT analysis_id, subject_id, visit, taken_at, {', '.join(CAPTURE)} FROM session_index
                 WHERE kind = 'photo'
                 UNION ALL
                 SELECT analysis_id, subject_id, visit, taken_at, {CAPTURE_SQL}
                 FROM analyses LEFT JOIN tones USING (analysis_id) WHERE ok AND subject_id IS NULL),
        qc AS (SELECT analysis_id, subject_id, visit, taken_at, {FLAG_COLUMNS}
               FROM rows LEFT JOIN qc_reference ON ref_subject = subject_id)
        SELECT *, {FLAGGED} AS flagged, {REASONS} AS reasons FROM qc ORDER BY subject_id, taken_at""",
                     {**limits.params(), "qc_baseline": baseline})

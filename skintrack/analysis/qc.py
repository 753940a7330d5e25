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

    def params(self) -> dict:
        return {f"qc_{k}": v for k, v in asdict(self).items()}


QC_SQL = """
qc_rows AS (
    SELECT a.analysis_id, a.subject_id, a.visit, a.taken_at, a.yaw, a.pitch, a.face_width, a.face_height,
           a.glasses, a.hair_occlusion, a.face_ratio, t.ita, t.ha, t.ita_class, t.ha_class,
           coalesce(a.subject_id, a.analysis_id) AS qc_who, a.ingested_at
    FROM analyses a LEFT JOIN tones t USING (analysis_id)
    WHERE a.ok),
qc_reference AS (  -- each subject's reference capture: the earliest at the baseline visit (or at all, without one)
    SELECT qc_who, arg_min(struct_pack(glasses := glasses, hair := hair_occlusion, ratio := face_ratio, ita := ita,
                                       ha := ha),
                           struct_pack(late := taken_at IS NULL, taken_at := taken_at, ingested_at := ingested_at)) AS ref
    FROM qc_rows WHERE coalesce(visit = $qc_baseline, $qc_baseline IS NULL) GROUP BY qc_who),
qc_base AS (  -- one grouped pass joined back: at 1M captures, half the CPU of the two window functions it replaced
    SELECT r.*, q.ref.glasses AS base_glasses, q.ref.hair AS base_hair, q.ref.ratio AS base_ratio,
           q.ref.ita AS base_ita, q.ref.ha AS base_ha
    FROM qc_rows r LEFT JOIN qc_reference q USING (qc_who)),
qc AS (
    SELECT analysis_id, subject_id, visit, taken_at,
        coalesce(abs(yaw) > $qc_max_yaw, false) AS yaw_out,
        coalesce(abs(pitch) > $qc_max_pitch, false) AS pitch_out,
        coalesce(least(face_width, face_height) < $qc_min_face, false) AS face_small,
        coalesce(glasses <> base_glasses, false) AS glasses_changed,
        coalesce(abs(hair_occlusion - base_hair) > $qc_hair_tolerance, false) AS hair_changed,
        coalesce(base_ratio > 0 AND abs(face_ratio / base_ratio - 1) > $qc_ratio_tolerance, false) AS distance_changed,
        coalesce(ita_class = 6 OR ha_class = 3, false) AS abnormal_light,
        coalesce(abs(ita - base_ita) > $qc_ita_noise OR abs(ha - base_ha) > $qc_ha_noise, false) AS tone_shift
    FROM qc_base),
qc_flags AS (
    SELECT *, (""" + " OR ".join(FLAGS) + """) AS flagged,
        concat_ws(', ', """ + ", ".join(f"CASE WHEN {f} THEN '{f}' END" for f in FLAGS) + """) AS reasons
    FROM qc)
"""


def qc_frame(study, limits: QCLimits = QCLimits()):
    """One row per ok analysis: subject, visit, time, a boolean per flag, `flagged` and `reasons`."""
    return study.sql(f"WITH {QC_SQL} SELECT * FROM qc_flags ORDER BY subject_id, taken_at",
                     {**limits.params(), "qc_baseline": study.plan.baseline})

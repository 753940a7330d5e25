"""SIMULATED Skin Analyze Pro responses: the sample trial in `data/` and the emulator's answers.

Nothing here is real data. Every response it builds carries ``"simulated"`` at the top level (kept in
the `extras` table) and a request id starting with ``SIMULATED``. The responses obey the documented
rules so they teach the right thing: the score formulas of degree-score.mdx with half-up rounding and the
floors seen in real data (total >= 70, dark-circle score >= 30), the v1.7.6 count bins of the pore and
blackhead severities, and the ITA and HA class bins. The oiliness and wrinkle scores have no documented
formula; the simulator uses its own monotone rules for them (see `_oily_score`, `_wrinkle_score`).

Example
-------
>>> doc = build_response(Latent.draw(random.Random(1)), random.Random(2))
>>> doc["result"]["score_info"]["total_score"] >= 70
True
"""
from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, fields, replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import orjson

from ..tables.schema import (COUNT_BINS, FINE_LINE_REGIONS, HA_BINS, ITA_BINS, OILY_REGIONS, WRINKLE_COUNT_REGIONS,
                     WRINKLE_REGIONS)

LABEL = "SIMULATED by skintrack.sample - not a real API response"
VISITS = {"D0": 0, "W4": 28, "W8": 56, "W12": 84}
DARK_CIRCLE_POINTS = {"pigment": (0, 7, 11, 16), "rete": (0, 9, 15, 20), "structural": (0, 11, 19, 28)}
SCORE_FLOORS = {"total_score": 70, "dark_circle_score": 30}


def half_up(x) -> int:
    """Round half away from zero, as the API does (47.5 -> 48)."""
    return int(Decimal(str(x)).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def _bin(value, bounds) -> int:
    """Index of the count bin: bounds are the upper limits of grades 0, 1, 2."""
    return next((i for i, top in enumerate(bounds) if value <= top), len(bounds))


def ita_class(ita: float) -> int:
    """ITA class from the documented bins (6 = outside every bin: abnormal lighting)."""
    return next((c for lo, hi, c in ITA_BINS if lo < ita <= hi), 6)


def ha_class(ha: float) -> int:
    """HA class from the documented bins (3 = abnormal lighting)."""
    if 49 < ha <= 90:
        return 0
    return next((c for lo, hi, c in HA_BINS[1:] if lo <= ha < hi), 3)


@dataclass
class Latent:
    """The quantities a photo shows; every response field is derived from them by the documented rules."""

    pores_forehead: float
    pores_left_cheek: float
    pores_right_cheek: float
    pores_chin: float
    blackheads: float
    water_severity: float
    water_area: float
    rough_severity: float
    rough_area: float
    melanin: float
    brown_area: float
    sensitivity: float
    sensitivity_area: float
    oily_area: float
    wrinkle_load: float
    acne: float
    comedones: float
    spots: float
    dark_pigment: int
    dark_rete: int
    dark_structural: int
    ita: float
    ha: float
    skin_age: float
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    face_ratio: float = 0.3
    hair_occlusion: float = 0.05
    glasses: int = 0

    @classmethod
    def draw(cls, rng: random.Random) -> Latent:
        """A plausible adult face."""
        g = rng.gauss
        return cls(
            pores_forehead=max(20, g(260, 110)), pores_left_cheek=max(10, g(85, 35)),
            pores_right_cheek=max(10, g(80, 35)), pores_chin=max(10, g(100, 40)), blackheads=max(0, g(60, 30)),
            water_severity=min(80, max(5, g(35, 10))), water_area=0, rough_severity=min(60, max(3, g(20, 7))),
            rough_area=0, melanin=min(40, max(1, g(9, 4))), brown_area=0, sensitivity=min(70, max(1, g(15, 7))),
            sensitivity_area=0, oily_area=min(0.9, max(0.02, g(0.3, 0.12))), wrinkle_load=max(0, g(0.35, 0.2)),
            acne=max(0, g(2, 1.5)), comedones=max(0, g(3, 2)), spots=max(0, g(14, 7)),
            dark_pigment=rng.choice((0, 0, 1, 1, 2)), dark_rete=rng.choice((0, 1, 1, 2)),
            dark_structural=rng.choice((0, 0, 1)), ita=g(40, 10), ha=g(40, 4), skin_age=g(38, 8),
            face_ratio=min(0.45, max(0.15, g(0.3, 0.04))), hair_occlusion=max(0, g(0.05, 0.03)))

    def shifted(self, rng: random.Random, noise: float = 1.0, **deltas) -> Latent:
        """This face at another visit: additive changes plus visit-to-visit noise on every quantity."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name) + deltas.get(f.name, 0.0)
            if f.type == "int" or isinstance(v, int):
                out[f.name] = v
            else:
                out[f.name] = v + rng.gauss(0, noise * _NOISE.get(f.name, 0.0))
        return replace(self, **out)


_NOISE = {"pores_forehead": 25, "pores_left_cheek": 12, "pores_right_cheek": 12, "pores_chin": 12, "blackheads": 7,
          "water_severity": 4, "rough_severity": 2.5, "melanin": 1.2, "sensitivity": 4, "oily_area": 0.05,
          "wrinkle_load": 0.04, "acne": 0.8, "comedones": 1, "spots": 2.5, "ita": 1.5, "ha": 1.0, "skin_age": 1.5,
          "yaw": 4, "pitch": 4, "roll": 2, "face_ratio": 0.01, "hair_occlusion": 0.01}


def _clip(x, lo, hi):
    return min(hi, max(lo, x))


def _boxes(rng, n, face):
    left, top, size = face
    rects, polys, conf = [], [], []
    for _ in range(n):
        w, h = rng.randint(6, 30), rng.randint(6, 30)
        x, y = left + rng.randint(0, max(1, size - w)), top + rng.randint(0, max(1, size - h))
        rects.append({"left": x, "top": y, "width": w, "height": h})
        k = rng.randint(3, 7)
        polys.append([{"x": x + round(w / 2 + w / 2 * math.cos(2 * math.pi * i / k)),
                       "y": y + round(h / 2 + h / 2 * math.sin(2 * math.pi * i / k))} for i in range(k)])
        conf.append(round(rng.uniform(0.3, 0.95), 8))
    return {"rectangle": rects, "confidence": conf, "polygon": polys, "count": n}


def _oily_score(area: float) -> int:
    """Simulator's own rule (the API documents none): 100 at no shine, 30 at 70% of the face shiny."""
    return half_up(_clip(100 - 100 * area, 30, 100))


def _wrinkle_score(region_scores: list[int]) -> int:
    """Simulator's own rule (the API documents none): 100 minus the mean regional wrinkle score."""
    return half_up(_clip(100 - sum(region_scores) / len(region_scores), 30, 100))


def build_response(z: Latent, rng: random.Random, size=(1000, 1000), request_id="SIMULATED") -> dict:
    """A full current-format (v1.7.6) response for the face `z`, without maps or marks.

    The steps draw from `rng` in a fixed order, so a seed gives the same bytes on every run.
    """
    width, height = size
    face_size = int(min(width, height) * 0.55)
    face = ((width - face_size) // 2, (height - face_size) // 2, face_size)
    m = _measures(z, rng, face)
    scores = _scores(m)
    result = {**_graded(z, m, rng), **_regional(m, scores, face, rng), **_capture(z, m, face, rng)}
    fx, fy, fs = face
    return {"simulated": LABEL, "request_id": request_id, "log_id": "SIMULATED", "error_code": 0,
            "error_detail": {"status_code": 200, "code": "", "code_message": "", "message": ""},
            "face_rectangle": {"top": fy, "left": fx, "width": fs, "height": fs}, "result": result}


def _area(x) -> float:
    return round(_clip(x, 0, 1), 3)


def _measures(z: Latent, rng: random.Random, face) -> dict:
    """What the photo shows, in the API's units: counts, detections, dark-circle grades, wrinkles, areas."""
    pores = {"forehead": round(z.pores_forehead), "left_cheek": round(z.pores_left_cheek),
             "right_cheek": round(z.pores_right_cheek), "chin": round(z.pores_chin)}
    m = {"pores": {k: max(0, v) for k, v in pores.items()}, "blackheads": max(0, round(z.blackheads)),
         "water": round(_clip(z.water_severity, 0, 100)), "rough": round(_clip(z.rough_severity, 0, 100)),
         "melanin": round(_clip(z.melanin, 0, 100)), "sensitivity": round(_clip(z.sensitivity, 0, 100)),
         "load": max(0.0, z.wrinkle_load)}
    load = m["load"]
    m["wrinkle_counts"] = {r: max(0, round(load * rng.uniform(2, 12))) for r in WRINKLE_COUNT_REGIONS}
    m["fine_counts"] = {r: max(0, round(load * rng.uniform(4, 25))) for r in FINE_LINE_REGIONS}
    m["det"] = {k: _boxes(rng, max(0, round(n)), face) for k, n in
                [("acne", z.acne), ("acne_pustule", z.acne / 6), ("acne_nodule", 0), ("acne_mark", z.acne / 2),
                 ("closed_comedones", z.comedones), ("mole", rng.random() < 0.3), ("brown_spot", z.spots)]}
    m["dark"] = {}
    for side in ("left", "right"):
        shift = 0 if side == "left" else rng.choice((-1, 0, 0, 1))
        m["dark"][side] = {k: int(_clip(getattr(z, f"dark_{k}") + shift, 0, 3)) for k in DARK_CIRCLE_POINTS}
    m["wrinkle_info"] = _wrinkle_info(load, m["wrinkle_counts"], m["fine_counts"], rng)
    oily = {r: round(_clip(z.oily_area * rng.uniform(0.6, 1.6), 0, 1), 2) for r in OILY_REGIONS}
    oily["full_face"] = round(_clip(z.oily_area, 0, 1), 2)
    m["oily_areas"] = oily
    m["water_area"] = _area(m["water"] / 100 * rng.uniform(0.6, 1.2))
    m["rough_area"] = _area(m["rough"] / 100 * rng.uniform(1.2, 2.0))
    m["brown_area"] = _area(m["melanin"] / 100 * rng.uniform(0.3, 0.6))
    return m


def _wrinkle_info(load: float, wrinkle_counts: dict, fine_counts: dict, rng: random.Random) -> dict:
    """The twelve `*_wrinkle_info` blocks."""
    out = {}
    for region in WRINKLE_REGIONS:
        count_key = {"left_eye": "left_undereye", "right_eye": "right_undereye"}.get(region, region)
        deep, shallow = wrinkle_counts[count_key], fine_counts.get(count_key, 0)
        lined = deep + shallow > 0
        score = int(_clip(round(load * 60 * rng.uniform(0.5, 1.5)) if lined else 0, 0, 100))
        out[region] = {
            "wrinkle_score": score, "wrinkle_severity_level": _bin(score, (9, 29, 59)),
            "wrinkle_norm_length": round(load * rng.uniform(0.2, 1.2), 6) if lined else 0,
            "wrinkle_norm_depth": round(_clip(load * rng.uniform(0.3, 1.0), 0, 1), 6) if lined else 0,
            "wrinkle_pixel_density": round(load * rng.uniform(0.05, 1.1), 6) if lined else 0,
            "wrinkle_area_ratio": round(_clip(load * rng.uniform(0.01, 0.1), 0, 1), 6) if lined else 0,
            "wrinkle_deep_ratio": round(deep / (deep + shallow), 6) if lined else 0,
            "wrinkle_deep_num": deep, "wrinkle_shallow_num": shallow}
    return out


def _scores(m: dict) -> dict:
    """`score_info` by the documented formulas (degree-score.mdx), half-up rounded, with the floors."""
    D, pores, det = Decimal, m["pores"], m["det"]
    region_pore_score = {"forehead": 100 - pores["forehead"] * D("0.1"), "leftcheek": 100 - pores["left_cheek"] * D("0.22"),
                         "rightcheek": 100 - pores["right_cheek"] * D("0.22"), "jaw": 100 - pores["chin"] * D("0.16")}
    pores_type = {f"pores_{k}_score": half_up(_clip(v, 0, 100)) for k, v in region_pore_score.items()}
    dc_side = {s: 100 - sum(DARK_CIRCLE_POINTS[k][g] for k, g in m["dark"][s].items()) for s in m["dark"]}
    oily_score = _oily_score(m["oily_areas"]["full_face"])
    scores = {
        "pores_score": half_up(D(sum(pores_type.values())) / 4),
        "blackhead_score": half_up(_clip(100 - m["blackheads"] * D("0.3"), 0, 100)),
        "acne_score": half_up(_clip(100 - det["closed_comedones"]["count"] * D("1.7") - det["acne"]["count"] * D("2.4")
                                    - det["acne_pustule"]["count"] * D("4.8") - det["acne_nodule"]["count"] * D("9.8"),
                                    0, 100)),
        "water_score": 100 - m["water"], "rough_score": 100 - m["rough"], "melanin_score": 100 - m["melanin"],
        "sensitivity_score": 100 - m["sensitivity"], "oily_intensity_score": oily_score,
        "wrinkle_score": _wrinkle_score([w["wrinkle_score"] for w in m["wrinkle_info"].values()]),
        "dark_circle_score": max(SCORE_FLOORS["dark_circle_score"], 100 - (100 - dc_side["left"]) - (100 - dc_side["right"])),
    }
    scores["skin_type_score"] = half_up(100 - D(scores["water_score"] + oily_score) / 2)
    total = ((scores["wrinkle_score"] + scores["pores_score"] + scores["blackhead_score"] + scores["acne_score"]
              + scores["melanin_score"]) * D("1.2") + (scores["water_score"] + oily_score + scores["rough_score"])
             * D("0.5") + scores["sensitivity_score"] + scores["dark_circle_score"]) / 10
    scores["total_score"] = max(SCORE_FLOORS["total_score"], half_up(total))
    return {**scores, "pores_type_score": pores_type, "dark_circle_type_score": {
        "left_dark_circle_score": dc_side["left"], "right_dark_circle_score": dc_side["right"]}}


def _graded(z: Latent, m: dict, rng: random.Random) -> dict:
    """Presence flags, grades, skin type and tone classes, with confidences."""
    load, pores, oily, wc, fc, dark = m["load"], m["pores"], m["oily_areas"], m["wrinkle_counts"], m["fine_counts"], m["dark"]
    conf = lambda: round(rng.uniform(0.5, 1.0), 8)  # noqa: E731
    skin_type = 3 if oily["t_zone"] > 0.3 and oily["left_cheek"] < 0.3 else (
        0 if oily["full_face"] > 0.4 else 1 if m["water"] > 45 else 2)
    grade = {"forehead": _bin(pores["forehead"], COUNT_BINS["pores.forehead"]),
             "left_cheek": _bin(pores["left_cheek"], COUNT_BINS["pores.left_cheek"]),
             "right_cheek": _bin(pores["right_cheek"], COUNT_BINS["pores.right_cheek"]),
             "jaw": _bin(pores["chin"], COUNT_BINS["pores.chin"])}
    presence = {"forehead_wrinkle": wc["forehead"], "crows_feet": wc["left_crowsfeet"] + wc["right_crowsfeet"],
                "eye_finelines": fc["left_undereye"] + fc["right_undereye"], "glabella_wrinkle": wc["glabella"],
                "nasolabial_fold": wc["left_nasolabial"] + wc["right_nasolabial"]}
    dc_type = 0 if not any(dark["left"].values()) else 1 + max(range(3), key=lambda i: list(dark["left"].values())[i])
    out = {"skin_age": {"value": int(_clip(round(z.skin_age), 10, 90))},
           "eye_pouch": {"value": int(load > 0.4), "confidence": conf()},
           "dark_circle": {"value": dc_type, "confidence": conf()},
           "dark_circle_severity": {"value": int(_clip(max(dark["left"].values()) - 1, 0, 2)), "confidence": conf()}}
    if load > 0.4:
        out["eye_pouch_severity"] = {"value": int(_clip(round(load * 2) - 1, 0, 2)), "confidence": conf()}
    for k, n in presence.items():
        out[k] = {"value": int(n > 0), "confidence": conf()}
        if n > 0 and k in ("eye_finelines", "nasolabial_fold"):
            out[f"{k}_severity"] = {"value": int(_clip(round(load * 3) - 1, 0, 2)), "confidence": conf()}
    out["skin_type"] = {"skin_type": skin_type, "details": [
        {"value": int(i == skin_type), "confidence": round(0.7 if i == skin_type else 0.1, 8)} for i in range(4)]}
    for api, g in grade.items():
        out[f"pores_{api}"] = {"value": g, "confidence": 1}
    out["blackhead"] = {"value": _bin(m["blackheads"], COUNT_BINS["blackhead"]), "confidence": 1}
    ita, ha = round(z.ita, 6), round(_clip(z.ha, 0, 90), 6)
    out["skintone_ita"] = {"ITA": ita, "skintone": ita_class(ita)}
    out["skin_hue_ha"] = {"HA": ha, "skin_hue": ha_class(ha)}
    out["sensitivity"] = {"sensitivity_area": _area(z.sensitivity_area or m["sensitivity"] / 100 * 0.4),
                          "sensitivity_intensity": m["sensitivity"]}
    out.update(m["det"])
    out["blackhead_count"] = m["blackheads"]
    out["skintone"] = {"value": min(4, max(0, ita_class(ita) - 1)) if ita_class(ita) < 6 else 2, "confidence": conf()}
    return out


def _regional(m: dict, scores: dict, face, rng: random.Random) -> dict:
    """Counts, areas and severities per region, the wrinkle blocks and the scores."""
    out = {"fine_line": {f"{r}_count": m["fine_counts"][r] for r in FINE_LINE_REGIONS},
           "wrinkle_count": {f"{r}_count": m["wrinkle_counts"][r] for r in WRINKLE_COUNT_REGIONS},
           "oily_intensity": {r: {"area": m["oily_areas"][r], "intensity": _bin(m["oily_areas"][r], (0.2, 0.4))}
                              for r in OILY_REGIONS},
           "enlarged_pore_count": {f"{k}_count": v for k, v in m["pores"].items()}}
    brown = m["brown_area"]
    out["melanin"] = {"brown_area": brown, "melanin_concentration": m["melanin"],
                      **{f"brown_{r}": _area(brown * rng.uniform(0.6, 1.4)) for r in ("forehead", "leftcheek", "rightcheek")}}
    for side in ("right", "left"):
        for kind in ("rete", "pigment", "structural"):
            out[f"{side}_dark_circle_{kind}"] = {"value": m["dark"][side][kind]}
    out["dark_circle_mark"] = _eye_rects(face)
    for name, regions in (("water", ("forehead", "leftcheek", "rightcheek")),
                          ("rough", ("forehead", "leftcheek", "rightcheek", "jaw"))):
        whole = m[f"{name}_area"]
        out[name] = {f"{name}_severity": m[name], f"{name}_area": whole,
                     **{f"{name}_{r}": {"area": _area(whole * rng.uniform(0.6, 1.4))} for r in regions}}
    level = {r: w["wrinkle_severity_level"] for r, w in m["wrinkle_info"].items()}
    for side in ("left", "right"):
        out[f"{side}_mouth_wrinkle_severity"] = {"value": level[f"{side}_mouth"]}
    out["forehead_wrinkle_severity"] = {"value": level["forehead"]}
    for side in ("left", "right"):
        out[f"{side}_crows_feet_severity"] = {"value": level[f"{side}_crowsfeet"]}
        out[f"{side}_eye_finelines_severity"] = {"value": level[f"{side}_eye"]}
    out["glabella_wrinkle_severity"] = {"value": level["glabella"]}
    for kind in ("nasolabial_fold", "cheek_wrinkle"):
        region = {"nasolabial_fold": "nasolabial", "cheek_wrinkle": "cheek"}[kind]
        for side in ("left", "right"):
            out[f"{side}_{kind}_severity"] = {"value": level[f"{side}_{region}"]}
    for region, info in m["wrinkle_info"].items():
        out[f"{region}_wrinkle_info"] = info
    out["score_info"] = scores
    return out


def _eye_rects(face) -> dict:
    fx, fy, fs = face
    return {"left_eye_rect": {"left": fx + fs // 8, "top": fy + fs // 3, "width": fs // 3, "height": fs // 4},
            "right_eye_rect": {"left": fx + fs // 2 + fs // 8, "top": fy + fs // 3, "width": fs // 3, "height": fs // 4}}


def _capture(z: Latent, m: dict, face, rng: random.Random) -> dict:
    """Eye-pouch boxes, melasma and freckle flags, and the image-quality block (pose, distance, glasses)."""
    eye = _eye_rects(face)
    conf = lambda: round(rng.uniform(0.5, 1.0), 8)  # noqa: E731
    fx, fy, fs = face
    return {"left_eye_pouch_rect": eye["left_eye_rect"], "right_eye_pouch_rect": eye["right_eye_rect"],
            "melasma": {"value": int(m["melanin"] > 20), "confidence": conf()},
            "freckle": {"value": int(m["det"]["brown_spot"]["count"] > 25), "confidence": conf()},
            "image_quality": {
                "face_rect": {"left": fx, "top": fy - fs // 5, "width": fs, "height": int(fs * 1.35)},
                "face_ratio": round(_clip(z.face_ratio, 0.01, 1), 8),
                "hair_occlusion": round(_clip(z.hair_occlusion, 0, 1), 8),
                "face_orientation": {"yaw": round(z.yaw, 6), "pitch": round(z.pitch, 6), "roll": round(z.roll, 6)},
                "glasses": int(z.glasses)},
            "sensitivity_type_v1": int(m["sensitivity"] > 30)}


# ---- the sample trial -------------------------------------------------------------------------------
# Per week of treatment, on top of what placebo does: the product hydrates, smooths and evens the skin.
EFFECT_PER_WEEK = {"water_severity": -1.1, "rough_severity": -0.45, "melanin": -0.12}
PLACEBO_PER_WEEK = {"water_severity": -0.25, "rough_severity": -0.05}


def simulate_trial(out_dir, seed: int = 20241108, subjects: int = 24) -> Path:
    """Write a SIMULATED two-arm placebo-controlled trial (visits D0/W4/W8/W12) into `out_dir`.

    Writes ``responses/<subject>_<visit>.json``, ``manifest.csv``, ``subjects.csv``, ``plan.toml``, the repeat
    captures (``repeats/`` and ``repeats.csv``) and ``README.md``.
    """
    import datetime as dt

    out = Path(out_dir)
    (out / "responses").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    start = dt.date(2024, 1, 8)
    manifest, people, d0, states = [], [], {}, {}
    arms = ["active", "placebo"] * (subjects // 2) + ["active"] * (subjects % 2)
    rng.shuffle(arms)
    for n, arm in enumerate(arms, 1):
        sid = f"S{n:02d}"
        base = Latent.draw(rng)
        people.append({"subject_id": sid, "arm": arm, "age": int(_clip(round(base.skin_age + rng.gauss(0, 4)), 20, 70)),
                       "sex": rng.choice("FM"), "skin_type_self": rng.choice(["dry", "normal", "oily", "combination"])})
        enrolled = start + dt.timedelta(days=rng.randint(0, 20))
        for visit, day in VISITS.items():
            weeks = day / 7
            per_week = EFFECT_PER_WEEK if arm == "active" else {}
            deltas = {k: (per_week.get(k, 0) + PLACEBO_PER_WEEK.get(k, 0)) * weeks
                      for k in set(EFFECT_PER_WEEK) | set(PLACEBO_PER_WEEK)}
            z = base.shifted(rng, noise=0 if visit == "D0" else 1.0, **deltas) if visit != "D0" else base
            if visit == "D0":
                z = replace(z, yaw=rng.gauss(0, 4), pitch=rng.gauss(0, 4), roll=rng.gauss(0, 2))
            # capture problems a QC check should catch (SIMULATED): a turned head, glasses, a closer camera
            if (sid, visit) == ("S03", "W8"):
                z = replace(z, yaw=36.0)
            if (sid, visit) == ("S07", "W4"):
                z = replace(z, glasses=1)
            if (sid, visit) == ("S11", "W12"):
                z = replace(z, face_ratio=z.face_ratio * 1.5)
            taken = enrolled + dt.timedelta(days=day + (rng.randint(-2, 2) if day else 0))
            name = f"{sid}_{visit}.json"
            doc = build_response(z, random.Random(f"{seed}-{sid}-{visit}"), request_id=f"SIMULATED-{sid}-{visit}")
            (out / "responses" / name).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            manifest.append({"file": f"responses/{name}", "subject_id": sid, "visit": visit,
                             "taken_at": f"{taken.isoformat()}T{rng.randint(8, 17):02d}:{rng.choice(('00', '30'))}:00",
                             "operator": rng.choice(["op-a", "op-b"])})
            if visit == "D0":
                d0[sid] = (z, manifest[-1])
            states[(sid, visit)] = (z, arm, manifest[-1]["taken_at"])
    sample_plan().write(out)
    _repeat_captures(out, seed, d0)
    _instrument_measures(out, seed, states)
    _photographs(out, states)
    _sentinel_panel(out, seed)
    for name, rows in (("manifest.csv", manifest), ("subjects.csv", people)):
        with open(out / name, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    (out / "README.md").write_text(
        "# Sample trial (SIMULATED)\n\nEvery file here is **simulated** by `skintrack.sample.simulate_trial"
        f"(seed={seed})`: {subjects} subjects, arms `active` and `placebo`, visits D0/W4/W8/W12. It is not real "
        "data and no real person is behind it.\n\nThe simulated product lowers dehydration "
        "(`severity.water`, so `score.water` rises), roughness and pigmentation over 12 weeks; every other metric "
        "only varies from visit to visit. Three captures carry planted problems for QC to catch: S03 W8 (head "
        "turned 36 deg), S07 W4 (glasses), S11 W12 (camera closer).\n\n`plan.toml` is the trial's study plan (primary "
        "endpoint `score.water` at W12, then `score.rough` and `score.melanin` in a fixed sequence).\n\n`repeats/` holds a "
        "repeat capture of every subject at D0, taken a minute before the main one (`repeats.csv`, `replicate` 1): "
        "what moves between two photos is the measurement's own noise (`Study.repeatability()`).\n\n"
        "`sentinel/` holds the results of a sentinel panel of three reference photos (P1-P3), sent at the start "
        "and at the end of each visit's `analyze` batch, with the archive's envelopes (`*.meta.json`): what "
        "`skintrack drift` compares to catch a change of the API's model. The photos were analysed after the "
        "trial, one batch per visit, a week apart from 2025-03-03. The simulated model is deterministic and "
        "did not change, so the sentinel's values never move.\n\n"
        "`measures.csv` holds what a trial measures beside the photos, declared in `measures.toml`: a "
        "Corneometer reading (three replicates) that follows the skin's hydration, an expert's wrinkle grade "
        "(0-5) given by two raters at every visit, and a three-item self-assessment (5-point agreement) at W4 "
        "and W12.\n\n`photos/` holds SIMULATED photographs of every subject at D0 and W12, each derived from one of "
        "the two portraits of the vendor's documentation (`tests/fixtures/real`) and labelled SIMULATED on the "
        "image; no trial subject is behind them. The archive envelope beside each of those responses "
        "(`responses/*.meta.json`) records its photo's path and SHA-256, as `skintrack analyze` does.\n\n"
        "Regenerate with `python -m skintrack.sample "
        "data/sample-trial`.\n")
    return out


PORTRAITS = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "real"
PHOTO_VISITS = ("D0", "W12")  # the baseline and the primary endpoint's visit
PHOTO_SIZE, FACE_BOX = 1000, (225, 225, 550)  # the sample responses' face_rectangle (left, top, side)


def _photographs(out: Path, states: dict) -> None:
    """SIMULATED photographs of the baseline and the primary endpoint's visit (``photos/``), each derived from
    one of the two real portraits of the vendor's documentation (``tests/fixtures/real``, mirrored for half of
    the subjects, the face moved into the responses' face box) and labelled SIMULATED on the image; beside each
    response its archive envelope (``*.meta.json``: the photo's path and SHA-256, as `skintrack analyze`
    writes it). Skipped when the portraits are not at hand (an installed package without the repository)."""
    import hashlib
    import io

    from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

    sources = [PORTRAITS / f"ailabtools-docs-case{i}" for i in (1, 2)]
    if not all((d / "image.jpeg").exists() for d in sources):
        return
    faces = []
    for d in sources:
        box = orjson.loads((d / "response-v1.7.json").read_bytes())["face_rectangle"]
        img = Image.open(d / "image.jpeg").convert("RGB")
        scale = FACE_BOX[2] / box["width"]  # the face to the responses' box: same place, same size
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        canvas = Image.new("RGB", (PHOTO_SIZE, PHOTO_SIZE), (128, 128, 128))
        canvas.paste(img, (round(FACE_BOX[0] - box["left"] * scale), round(FACE_BOX[1] - box["top"] * scale)))
        face = Image.new("L", canvas.size, 0)  # the face sharp, the background soft (and small on disk)
        ImageDraw.Draw(face).ellipse((FACE_BOX[0] - 60, FACE_BOX[1] - 120, FACE_BOX[0] + FACE_BOX[2] + 60,
                                      FACE_BOX[1] + FACE_BOX[2] + 60), fill=255)
        faces.append(Image.composite(canvas, canvas.filter(ImageFilter.GaussianBlur(10)),
                                     face.filter(ImageFilter.GaussianBlur(25))))
    font, small = ImageFont.load_default(size=34), ImageFont.load_default(size=24)
    (out / "photos").mkdir(exist_ok=True)
    for (sid, visit), (z, arm, _taken) in sorted(states.items()):
        if visit not in PHOTO_VISITS:
            continue
        number = int(sid[1:])
        img = faces[number % 2]
        img = ImageOps.mirror(img) if number % 4 >= 2 else img.copy()
        # SIMULATED look of the skin: dehydration dulls it a little, melanin darkens it
        img = Image.eval(img, lambda v, k=1 - (z.water_severity - 20) / 600 - (z.melanin - 9) / 900: min(255, round(v * k)))
        mark = Image.new("RGBA", img.size, (0, 0, 0, 0))  # across the face too: any crop still says it
        ImageDraw.Draw(mark).text((PHOTO_SIZE / 2, FACE_BOX[1] + FACE_BOX[2] - 40), "SIMULATED", anchor="mm",
                                  fill=(255, 255, 255, 120), font=ImageFont.load_default(size=64))
        img = Image.alpha_composite(img.convert("RGBA"), mark).convert("RGB")
        draw = ImageDraw.Draw(img)
        draw.rectangle((0, 0, PHOTO_SIZE, 80), fill=(230, 159, 0))
        draw.text((14, 6), f"SIMULATED  {sid} {visit} ({arm})", fill=(0, 0, 0), font=font)
        draw.text((14, 46), "derived from a vendor's sample portrait; no trial subject", fill=(0, 0, 0), font=small)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=45, optimize=True)
        (out / "photos" / f"{sid}_{visit}.jpg").write_bytes(buf.getvalue())
        envelope = {"simulated": True, "photo": f"../photos/{sid}_{visit}.jpg",
                    "photo_sha256": hashlib.sha256(buf.getvalue()).hexdigest(), "width": PHOTO_SIZE,
                    "height": PHOTO_SIZE}
        (out / "responses" / f"{sid}_{visit}.meta.json").write_bytes(orjson.dumps(envelope, option=orjson.OPT_INDENT_2))


SELF_ASSESSMENT = {"feels_hydrated": "My skin feels more hydrated", "looks_smoother": "My skin looks smoother",
                   "would_use_again": "I would use the product again"}
MEASURES_CATALOG = """# The sample trial's measures (SIMULATED): what each is, its unit, range and type.
[corneometer]
description = "Stratum corneum hydration, Corneometer CM 825 (SIMULATED)"
unit = "a.u."
range = [0, 130]
better = "higher"

[wrinkle_grade]
description = "Expert wrinkle grade, 0 none to 5 severe (SIMULATED)"
type = "grade"
levels = [0, 1, 2, 3, 4, 5]
better = "lower"
""" + "".join(f"""
[{name}]
description = "{statement} (1 disagree strongly to 5 agree strongly; SIMULATED)"
type = "likert"
levels = [1, 2, 3, 4, 5]
agree = [4, 5]
better = "higher"
""" for name, statement in SELF_ASSESSMENT.items())


def _instrument_measures(out: Path, seed: int, states: dict) -> None:
    """SIMULATED measures beside the photos (``measures.csv``, declared in ``measures.toml``): a Corneometer
    reading that falls with the face's dehydration, two raters' wrinkle grades, and a self-assessment at W4
    and W12 that the active arm agrees with more often. Own RNG: the trial's responses do not change."""
    rng = random.Random(f"{seed}-measures")
    rows = []
    for (sid, visit), (z, arm, taken) in states.items():
        hydration = 75 - 0.9 * z.water_severity + rng.gauss(0, 3)  # the subject's skin at this visit
        for rep in (1, 2, 3):
            rows.append({"subject_id": sid, "visit": visit, "measure": "corneometer",
                         "value": round(_clip(hydration + rng.gauss(0, 1.5), 0, 130), 1), "taken_at": taken,
                         "unit": "a.u.", "device": "CM 825 (SIMULATED)", "rater": "", "replicate": str(rep)})
        for rater, bias in (("R1", 0.0), ("R2", 0.3)):
            grade = _clip(round(z.wrinkle_load * 7 + bias + rng.gauss(0, 0.5)), 0, 5)
            rows.append({"subject_id": sid, "visit": visit, "measure": "wrinkle_grade", "value": grade,
                         "taken_at": taken, "unit": "", "device": "", "rater": rater, "replicate": ""})
        if visit in ("W4", "W12"):
            lean = (0.9 if arm == "active" else 0.2) * (1.5 if visit == "W12" else 1.0)
            for item in SELF_ASSESSMENT:
                answer = _clip(round(3 + lean + rng.gauss(0, 1.0)), 1, 5)
                rows.append({"subject_id": sid, "visit": visit, "measure": item, "value": answer, "taken_at": taken,
                             "unit": "", "device": "", "rater": "", "replicate": ""})
    (out / "measures.toml").write_text(MEASURES_CATALOG)
    with open(out / "measures.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


REPEAT_NOISE = 0.3  # share of the visit-to-visit noise that two photos a minute apart still show


def _repeat_captures(out: Path, seed: int, d0: dict) -> None:
    """A second SIMULATED capture of each subject at D0, a minute before the main one, with its own RNG (the
    trial's responses do not change)."""
    import datetime as dt

    (out / "repeats").mkdir(exist_ok=True)
    rows = []
    for sid, (z, row) in d0.items():
        rng = random.Random(f"{seed}-{sid}-repeat")
        again = replace(z.shifted(rng, noise=REPEAT_NOISE), glasses=z.glasses)
        name = f"{sid}_D0_r1.json"
        doc = build_response(again, random.Random(f"{seed}-{sid}-D0-r1"), request_id=f"SIMULATED-{sid}-D0-r1")
        (out / "repeats" / name).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        taken = dt.datetime.fromisoformat(row["taken_at"]) - dt.timedelta(minutes=1)
        rows.append({"file": f"repeats/{name}", "subject_id": sid, "visit": "D0", "taken_at": taken.isoformat(),
                     "operator": row["operator"], "replicate": "1"})
    with open(out / "repeats.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


SENTINEL_PANEL = ("P1", "P2", "P3")


def _sentinel_panel(out: Path, seed: int) -> None:
    """SIMULATED sentinel results: the panel P1-P3 re-sent at the start and the end of one batch per visit
    (``sentinel/<batch>/<photo>.<position>.json`` with the archive's envelope beside it). The photos were
    sent to the API after the trial, one batch per visit a week apart from 2025-03-03 (a retrospective
    analysis, under v1.7.6). The simulated model is deterministic and never changes here, so every run of
    a photo returns the same values (only the request id differs). Own RNG: the trial's responses do not
    change."""
    import datetime as dt
    import hashlib

    rng = random.Random(f"{seed}-sentinel")
    panel = {name: Latent.draw(rng) for name in SENTINEL_PANEL}
    for week, visit in enumerate(VISITS):
        batch = f"{visit}-batch"
        folder = out / "sentinel" / batch
        folder.mkdir(parents=True, exist_ok=True)
        for hour, position in ((8, "start"), (18, "end")):
            called = dt.datetime.combine(dt.date(2025, 3, 3 + 7 * week), dt.time(hour), dt.timezone.utc)
            for name, z in panel.items():
                doc = build_response(replace(z, glasses=0), random.Random(f"{seed}-sentinel-{name}"),
                                     request_id=f"SIMULATED-sentinel-{visit}-{position}-{name}")
                (folder / f"{name}.{position}.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
                envelope = {"simulated": True, "photo": f"sentinel-panel/{name}.jpg",
                            "photo_sha256": hashlib.sha256(f"SIMULATED sentinel photo {name}".encode()).hexdigest(),
                            "batch": batch, "sentinel": {"name": f"{name}.jpg", "position": position},
                            "started_at": called.isoformat(), "status": 200}
                (folder / f"{name}.{position}.meta.json").write_bytes(orjson.dumps(envelope, option=orjson.OPT_INDENT_2))


def sample_plan():
    """The SIMULATED sample trial's study plan: hydration at W12 first, then roughness and pigmentation."""
    from ..tables.plan import Endpoint, Plan, Visit

    return Plan(title="Sample trial (SIMULATED)", sponsor="skintrack (SIMULATED)",
                product="Hydrating serum (SIMULATED)", protocol="SIM-2024-01", version="1.0", baseline="D0",
                visits=[Visit(v, d, 0 if v == "D0" else 3) for v, d in VISITS.items()], control="placebo",
                treatments=["active"], primary=Endpoint("score.water", "W12"),
                secondary=[Endpoint("score.rough", "W12"), Endpoint("score.melanin", "W12")],
                multiplicity="fixed_sequence", qc="exclude", responders={"score.water": 5.0},
                illustration={"per_arm": 2, "seed": 7},
                estimand={"population": "Randomised subjects with a usable baseline photograph and at least one "
                                        "later one",
                          "summary": "Difference between the arms in the LS-mean change from baseline at W12 (MMRM), "
                                     "with its 95% CI",
                          "strategies": {"discontinuation": "treatment_policy", "rescue": "hypothetical"}},
                sensitivity={"methods": ["qc", "mi", "j2r", "cr", "tipping"], "imputations": 100, "seed": 20241108})


def sample_photo(folder, name: str = "photo.jpg", size=(800, 800), seed: int = 0, fmt: str = "JPEG") -> Path:
    """Write a SIMULATED photo (a drawn face-like oval on noise, no real person) for tests and examples; the same
    seed gives the same bytes (Pillow's own noise is not seeded)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    noise = np.random.default_rng(seed).normal(128, 40, (size[1], size[0]))  # as Image.effect_noise(size, 40)
    img = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "L").convert("RGB")
    draw = ImageDraw.Draw(img)
    w, h = size
    tone = (rng.randint(170, 230), rng.randint(130, 180), rng.randint(110, 150))
    draw.ellipse((w * 0.25, h * 0.15, w * 0.75, h * 0.85), fill=tone)
    for ex in (0.4, 0.6):
        draw.ellipse((w * ex - w * 0.04, h * 0.4, w * ex + w * 0.04, h * 0.45), fill=(60, 40, 30))
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def sample_study_dir() -> Path:
    """The sample trial's folder: the repository's `data/sample-trial`, else regenerated into a cache folder."""
    repo = Path(__file__).resolve().parents[2] / "data" / "sample-trial"
    if (repo / "manifest.csv").exists():
        return repo
    cache = Path.home() / ".cache" / "skintrack" / "sample-trial"
    if not all((cache / name).exists() for name in ("manifest.csv", "measures.csv")):  # a cache of an older skintrack
        simulate_trial(cache)
    return cache


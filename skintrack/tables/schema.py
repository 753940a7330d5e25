"""The flattening, declared as data.

Every JSON path skintrack understands is declared here once, with the table it goes to, the row key
(feature, region, ...), the column, and what it means. The flattener, the Parquet schemas, the metric
catalog and the docs all derive from these declarations; no other module names a JSON path.

Paths are dotted; list indices are path components too, so ``result.skin_type.details.0.value`` names
both the real array form and the seed document's object form ``{"0": {...}}``.

Example
-------
>>> FIELDS["result.score_info.total_score"].metric_key
'score.total'
>>> FIELDS["result.pores_leftcheek.value"].key   # a documented variant of pores_left_cheek
(('feature', 'pores'), ('region', 'left_cheek'))
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from . import keys

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------
REGIONS = {
    "whole_face": "whole face", "forehead": "forehead", "t_zone": "T-zone", "nose": "nose",
    "glabella": "glabella (between the brows)", "left_cheek": "left cheek", "right_cheek": "right cheek",
    "chin": "chin", "left_eye": "left eye", "right_eye": "right eye", "left_undereye": "left under-eye",
    "right_undereye": "right under-eye", "left_crowsfeet": "left crow's feet", "right_crowsfeet":
    "right crow's feet", "left_nasolabial": "left nasolabial fold", "right_nasolabial": "right nasolabial fold",
    "left_mouth": "left mouth corner", "right_mouth": "right mouth corner", "front": "front photo",
    "left": "left side", "right": "right side",
}

GRADE4 = {0: "None", 1: "Mild", 2: "Moderate", 3: "Severe"}
GRADE3 = {0: "Mild", 1: "Moderate", 2: "Severe"}
PRESENCE = {0: "Absent", 1: "Present"}
LABELS = {
    "grade4": GRADE4,
    "grade3": GRADE3,
    "presence": PRESENCE,
    "oily": {0: "No or slight shine", 1: "Moderate shine", 2: "Severe oiliness"},
    "dark_circle_type": {0: "None", 1: "Pigmented", 2: "Vascular", 3: "Shadowed"},
    "skin_type": {0: "Oily", 1: "Dry", 2: "Neutral", 3: "Combination"},
    "ita_class": {0: "Very light", 1: "Light", 2: "Intermediate", 3: "Tan", 4: "Brown", 5: "Dark",
                  6: "Abnormal (lighting)"},
    "ha_class": {0: "Yellowish", 1: "Neutral", 2: "Reddish", 3: "Abnormal (lighting)"},
    "skin_tone": {0: "Very light", 1: "Light", 2: "Intermediate", 3: "Tan", 4: "Brown/Dark"},
    "jawline_quality": {1: "Pass", 2: "Angle too low", 3: "Angle too high", 4: "No face", 5: "Invalid face",
                        6: "Other"},
    "jawline_level": {0: "Standard (116-120 deg)", 1: "Not standard"},
}
# 0-100 severities (water, rough, melanin, sensitivity): the grade follows the score bands of
# degree-score.mdx, since each score is 100 - severity: [90,100] None, [70,89] Mild, [50,69] Moderate.
SEVERITY_100_BANDS = ((10, "None"), (30, "Mild"), (50, "Moderate"), (100, "Severe"))

# Documented count bins of the graded severities (api-latest-v1.7.6.mdx; real responses agree).
COUNT_BINS = {
    "blackhead": (45, 90, 150),
    "pores.forehead": (100, 300, 500),
    "pores.left_cheek": (45, 136, 227),
    "pores.right_cheek": (45, 136, 227),
    "pores.chin": (63, 188, 313),
}
# ITA and HA classes (lower bound exclusive unless said), from the seed document.
ITA_BINS = ((56, 90, 0), (43, 56, 1), (36, 43, 2), (20, 36, 3), (10, 20, 4), (-90, 10, 5))  # lo < ITA <= hi
HA_BINS = ((49, 90, 0), (46, 49, 1), (10, 46, 2))  # 49 < HA <= 90; 46 <= HA < 49; 10 <= HA < 46


# --------------------------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One scalar JSON leaf: where it goes and what it means."""

    path: str
    table: str
    column: str
    key: tuple = ()
    description: str = ""
    unit: str = ""
    range: tuple = (None, None)
    better: str = "none"
    labels: str | None = None
    kind: str = "number"  # number | text
    variants: tuple = ()

    @property
    def metric_key(self) -> str | None:
        """The catalog key of this measurement, or None when it is not a metric."""
        k = dict(self.key)
        if self.table == "scores":
            return f"score.{k['metric']}"
        if self.table in ("counts", "areas") and self.column == "value":
            return f"{self.table[:-1]}.{k['feature']}.{k['region']}"
        if self.table == "severities" and self.column == "value":
            return ".".join(["severity", k["feature"]] + ([k["region"]] if k.get("region") else []))
        if self.table == "tones" and self.column != "skin_tone_confidence":
            return f"tone.{self.column}"
        if self.table == "wrinkles":
            return f"wrinkle.{k['region']}.{self.column}"
        if self.table == "analyses" and self.column == "skin_age":
            return "skin.age"
        return None


@dataclass(frozen=True)
class Block:
    """A variable-length JSON subtree (detections, outlines, wrinkle lines, maps) handled as a unit."""

    path: str
    handler: str  # detections | points | polygons | wrinkle_lines | map
    kind: str = ""
    region: str | None = None
    side: str = "front"
    variants: tuple = ()


_FIELDS: list[Field] = []
_BLOCKS: list[Block] = []


def _f(path, table, column, key=(), **meta):
    _FIELDS.append(Field(path, table, column, tuple(key), **meta))


def _b(path, handler, **kw):
    _BLOCKS.append(Block(path, handler, **kw))


# ---- analyses: envelope, face box, image quality -------------------------------------------------
for col, path in [("request_id", "request_id"), ("log_id", "log_id"), ("error_status", "error_detail.code"),
                  ("error_code_message", "error_detail.code_message"), ("error_message", "error_detail.message"),
                  ("error_code_str", "error_code_str"), ("error_msg", "error_msg")]:
    _f(path, "analyses", col, kind="text", description=f"Response field {path}.")
_f("error_code", "analyses", "error_code", description="Legacy numeric error code (0 = success).")
_f("error_detail.status_code", "analyses", "http_status", description="HTTP status echoed in error_detail.")
for side in ("left", "top", "width", "height"):
    _f(f"face_rectangle.{side}", "analyses", f"face_{side}", unit="px", description=f"Face box {side}.")
IQ = "result.image_quality"
_f(f"{IQ}.face_ratio", "analyses", "face_ratio", variants=(f"{IQ}.face_ratio:",), range=(0, 1),
   description="Share of the photo taken by the face (camera distance).")
_f(f"{IQ}.hair_occlusion", "analyses", "hair_occlusion", range=(0, 1), description="Share of the face under hair.")
_f(f"{IQ}.glasses", "analyses", "glasses", labels="presence", description="Eyeglasses worn (1) or not (0).")
for angle in ("yaw", "pitch", "roll"):
    _f(f"{IQ}.face_orientation.{angle}", "analyses", angle, unit="deg", description=f"Head {angle} angle.")
_f("result.skin_age.value", "analyses", "skin_age", unit="years", range=(0, 100), better="lower",
   description="Apparent skin age.")
_f("result.skin_type.skin_type", "analyses", "skin_type", labels="skin_type", range=(0, 3),
   description="Skin type class: 0 oily, 1 dry, 2 neutral, 3 combination.")

# ---- scores ---------------------------------------------------------------------------------------
SCORE_NAMES = {
    "total": "Total skin score", "acne": "Acne score", "pores": "Pore score", "blackhead": "Blackhead score",
    "dark_circle": "Dark circle score", "wrinkle": "Wrinkle score", "water": "Skin moisture score",
    "oily_intensity": "Oiliness score", "rough": "Roughness score", "melanin": "Pigmentation (melanin) score",
    "sensitivity": "Sensitivity (redness) score",
    "skin_type": "Skin type score (1-15 neutral, 16-40 dry, 41-60 combination, 61-100 oily)",
}
for name, desc in SCORE_NAMES.items():
    _f(f"result.score_info.{name}_score", "scores", "value", [("metric", name)], description=desc + ".",
       unit="points", range=(0, 100), better="none" if name == "skin_type" else "higher")
for api, region in [("forehead", "forehead"), ("leftcheek", "left_cheek"), ("rightcheek", "right_cheek"),
                    ("jaw", "chin")]:
    _f(f"result.score_info.pores_type_score.pores_{api}_score", "scores", "value", [("metric", f"pores.{region}")],
       description=f"Pore score, {REGIONS[region]}.", unit="points", range=(0, 100), better="higher")
for side in ("left", "right"):
    _f(f"result.score_info.dark_circle_type_score.{side}_dark_circle_score", "scores", "value",
       [("metric", f"dark_circle.{side}")], description=f"Dark circle score, {side} eye.", unit="points",
       range=(0, 100), better="higher")
    _f(f"{side}_side_result.{side}_acne_info.score", "scores", "value", [("metric", f"acne.{side}")],
       description=f"Acne score of the {side} side-face photo.", unit="points", range=(0, 100), better="higher")

# ---- counts ---------------------------------------------------------------------------------------
_f("result.blackhead_count", "counts", "value", [("feature", "blackhead"), ("region", "nose")],
   description="Number of blackheads on the nose.", unit="count", range=(0, None), better="lower")
for api, region in [("forehead", "forehead"), ("left_cheek", "left_cheek"), ("right_cheek", "right_cheek"),
                    ("chin", "chin")]:
    key = [("feature", "enlarged_pore"), ("region", region)]
    desc = f"Number of enlarged pores, {REGIONS[region]}."
    seed = "forehead" if api == "forehead" else f"{api}_count"  # v1.6.6 document: {count, area} objects
    _f(f"result.enlarged_pore_count.{api}_count", "counts", "value", key, description=desc, unit="count",
       range=(0, None), better="lower", variants=(f"result.enlarged_pore_count.{seed}.count",))
    _f(f"result.enlarged_pore_count.{seed}.area", "areas", "value", key,
       description=f"Share of area with enlarged pores, {REGIONS[region]} (v1.6.6 document form).",
       unit="share", range=(0, 1), better="lower")
FINE_LINE_REGIONS = ("forehead", "left_undereye", "right_undereye", "left_cheek", "right_cheek",
                     "left_crowsfeet", "right_crowsfeet", "glabella")
WRINKLE_COUNT_REGIONS = FINE_LINE_REGIONS + ("left_mouth", "right_mouth", "left_nasolabial", "right_nasolabial")
for region in FINE_LINE_REGIONS:
    _f(f"result.fine_line.{region}_count", "counts", "value", [("feature", "fine_line"), ("region", region)],
       description=f"Number of fine lines, {REGIONS[region]}.", unit="count", range=(0, None), better="lower")
for region in WRINKLE_COUNT_REGIONS:
    _f(f"result.wrinkle_count.{region}_count", "counts", "value", [("feature", "wrinkle"), ("region", region)],
       description=f"Number of deep wrinkles, {REGIONS[region]}.", unit="count", range=(0, None), better="lower")

# ---- areas ----------------------------------------------------------------------------------------
def _area(path, feature, region, what, **kw):
    _f(path, "areas", "value", [("feature", feature), ("region", region)], unit="share", range=(0, 1),
       better="lower", description=f"Share of {REGIONS[region]} area {what}.", **kw)


OILY_REGIONS = {"t_zone": "t_zone", "left_cheek": "left_cheek", "right_cheek": "right_cheek",
                "chin_area": "chin", "full_face": "whole_face"}
for api, region in OILY_REGIONS.items():
    _area(f"result.oily_intensity.{api}.area", "oily", region, "that is oily (shine)")
for feature, what, whole in [("water", "that is dehydrated", "water_area"), ("rough", "that is rough", "rough_area")]:
    _area(f"result.{feature}.{whole}", feature, "whole_face", what)
    for api, region in [("forehead", "forehead"), ("leftcheek", "left_cheek"), ("rightcheek", "right_cheek"),
                        ("jaw", "chin")]:
        if feature == "water" and api == "jaw":
            continue
        _area(f"result.{feature}.{feature}_{api}.area", feature, region, what)
_area("result.melanin.brown_area", "brown", "whole_face", "that is hyperpigmented")
for api, region in [("forehead", "forehead"), ("leftcheek", "left_cheek"), ("rightcheek", "right_cheek")]:
    _area(f"result.melanin.brown_{api}", "brown", region, "that is hyperpigmented")
_area("result.sensitivity.sensitivity_area", "sensitivity", "whole_face", "that is red (sensitive)")


# ---- severities -----------------------------------------------------------------------------------
def _sev(api, feature, region=None, labels="grade4", desc="", confidence=True, rng=(0, 3), legacy=None):
    key = [("feature", feature), ("region", region)]
    meta = dict(labels=labels, range=rng, better="none" if labels in ("dark_circle_type", "skin_type") else "lower",
                unit="grade", description=desc)
    alias = (lambda leaf: (f"result.{legacy}.{leaf}",)) if legacy else (lambda leaf: ())
    _f(f"result.{api}.value", "severities", "value", key, variants=alias("value"), **meta)
    if confidence:
        _f(f"result.{api}.confidence", "severities", "confidence", key, description=f"Confidence of {desc}",
           range=(0, 1), variants=alias("confidence"))


for api, region in [("forehead", "forehead"), ("left_cheek", "left_cheek"), ("right_cheek", "right_cheek"),
                    ("jaw", "chin")]:
    legacy = f"pores_{api.replace('_', '')}" if "cheek" in api else None  # v1.6.6 document: pores_leftcheek
    _sev(f"pores_{api}", "pores", region, desc=f"Enlarged pore severity, {REGIONS[region]}.", legacy=legacy)
_sev("blackhead", "blackhead", desc="Blackhead severity.")
for api, desc in [("eye_pouch", "Eye bags"), ("forehead_wrinkle", "Forehead lines"), ("crows_feet", "Crow's feet"),
                  ("eye_finelines", "Under-eye fine lines"), ("glabella_wrinkle", "Glabella (frown) lines"),
                  ("nasolabial_fold", "Nasolabial folds"), ("melasma", "Melasma"), ("freckle", "Freckles")]:
    _sev(api, f"{api}_presence", labels="presence", rng=(0, 1), desc=f"{desc} detected (1) or not (0).")
for api in ("eye_pouch", "dark_circle", "nasolabial_fold", "eye_finelines"):
    _sev(f"{api}_severity", api, labels="grade3", rng=(0, 2),
         desc=f"{api.replace('_', ' ').capitalize()} severity (returned only when detected).")
_sev("dark_circle", "dark_circle_type", labels="dark_circle_type", desc="Dark circle type.")
for side in ("left", "right"):
    for api, feature in [("mouth_wrinkle", "mouth_wrinkle"), ("crows_feet", "crows_feet"),
                         ("eye_finelines", "eye_finelines"), ("nasolabial_fold", "nasolabial_fold"),
                         ("cheek_wrinkle", "cheek_wrinkle")]:
        _sev(f"{side}_{api}_severity", feature, side, confidence=False,
             desc=f"{feature.replace('_', ' ').capitalize()} severity, {side} side.")
    for kind, what in [("rete", "vascular"), ("pigment", "pigmented"), ("structural", "structural (shadowed)")]:
        _sev(f"{side}_dark_circle_{kind}", f"dark_circle_{kind}", side, confidence=False,
             desc=f"Severity of {what} dark circles, {side} eye.")
for api in ("forehead_wrinkle", "glabella_wrinkle"):
    _sev(f"{api}_severity", api, confidence=False, desc=f"{api.replace('_', ' ').capitalize()} severity.")
for api, region in OILY_REGIONS.items():
    _f(f"result.oily_intensity.{api}.intensity", "severities", "value", [("feature", "oily"), ("region", region)],
       labels="oily", range=(0, 2), better="lower", unit="grade",
       description=f"Oiliness grade, {REGIONS[region]}: 0 none/slight, 1 moderate, 2 severe.")
for path, feature, desc in [("result.water.water_severity", "water", "Dehydration severity"),
                            ("result.rough.rough_severity", "rough", "Roughness severity"),
                            ("result.melanin.melanin_concentration", "melanin", "Pigmentation (melanin) degree"),
                            ("result.sensitivity.sensitivity_intensity", "sensitivity", "Redness intensity")]:
    _f(path, "severities", "value", [("feature", feature), ("region", None)], labels="severity_100",
       range=(0, 100), better="lower", unit="0-100", description=f"{desc}, 0-100 (score = 100 - this).")
for i, name in enumerate(("oily", "dry", "neutral", "combination")):
    key = [("feature", f"skin_type_{name}"), ("region", None)]
    _f(f"result.skin_type.details.{i}.value", "severities", "value", key, labels="presence", range=(0, 1),
       description=f"Skin is {name} (1) or not (0).")
    _f(f"result.skin_type.details.{i}.confidence", "severities", "confidence", key, range=(0, 1),
       description=f"Confidence that skin is {name}.")
_f("result.sensitivity_type_v1", "severities", "value", [("feature", "sensitivity_type_v1"), ("region", None)],
   description="Undocumented sensitivity class seen in real responses (kept as returned).")

# ---- tones ----------------------------------------------------------------------------------------
_f("result.skintone_ita.ITA", "tones", "ita", unit="deg", range=(-90, 90),
   description="Individual Typology Angle (ITA) of the skin colour; higher is lighter.")
_f("result.skintone_ita.skintone", "tones", "ita_class", labels="ita_class", range=(0, 6),
   description="ITA skin colour class; 6 = abnormal lighting.")
_f("result.skin_hue_ha.HA", "tones", "ha", unit="deg", range=(0, 90), description="Skin hue angle (HA).")
_f("result.skin_hue_ha.skin_hue", "tones", "ha_class", labels="ha_class", range=(0, 3),
   description="Hue class; 3 = abnormal lighting.", variants=("result.skin_hue_ha.skintone",))
_f("result.skintone.value", "tones", "skin_tone", labels="skin_tone", range=(0, 4),
   description="Skin colour classification.", variants=("result.skin_tone.value",))
_f("result.skintone.confidence", "tones", "skin_tone_confidence", range=(0, 1),
   description="Confidence of the skin colour class.", variants=("result.skin_tone.confidence",))

# ---- wrinkles -------------------------------------------------------------------------------------
WRINKLE_REGIONS = ("forehead", "left_eye", "right_eye", "left_crowsfeet", "right_crowsfeet", "glabella",
                   "left_mouth", "right_mouth", "left_nasolabial", "right_nasolabial", "left_cheek", "right_cheek")
WRINKLE_MEASURES = {
    "score": ("Wrinkle score (higher = more wrinkled)", "points", (0, 100)),
    "severity_level": ("Wrinkle severity level", "grade", (0, 3)),
    "norm_length": ("Normalised wrinkle length", "", (0, None)),
    "norm_depth": ("Normalised wrinkle depth", "", (0, None)),
    "pixel_density": ("Wrinkle pixel density (can exceed 1)", "", (0, None)),
    "area_ratio": ("Share of area wrinkled", "share", (0, 1)),
    "deep_ratio": ("Share of wrinkle length that is deep", "share", (0, 1)),
    "deep_num": ("Number of deep lines", "count", (0, None)),
    "shallow_num": ("Number of shallow lines", "count", (0, None)),
}
for region in WRINKLE_REGIONS:
    for measure, (desc, unit, rng) in WRINKLE_MEASURES.items():
        _f(f"result.{region}_wrinkle_info.wrinkle_{measure}", "wrinkles", measure, [("region", region)],
           description=f"{desc}, {REGIONS[region]}.", unit=unit, range=rng, better="lower",
           labels="grade4" if measure == "severity_level" else None)
    _b(f"result.{region}_wrinkle_info.{region}_wrinkle_list", "wrinkle_lines", kind="wrinkle_line", region=region)

# ---- side-face results (v1.6.2+, nested jawline_info from v1.7.1) -----------------------------------
for side in ("left", "right"):
    for col, labels in [("jawline_quality", "jawline_quality"), ("jawline_angle", None),
                        ("jawline_angle_level", "jawline_level")]:
        flat = f"{side}_side_result.{side}_{col}"  # v1.6.6 document form
        _f(f"{side}_side_result.{side}_jawline_info.{side}_{col}", "side_results", col, [("side", side)],
           labels=labels, unit="deg" if col == "jawline_angle" else "", description=f"{col} of the {side} profile.",
           variants=(flat, f"{side}_jawline_info.{side}_{col}"))
    _b(f"{side}_side_result.{side}_jawline_info.{side}_jawline_mark", "points", kind="jawline_mark", side=side,
       variants=(f"{side}_side_result.{side}_jawline_mark", f"{side}_jawline_info.{side}_jawline_mark"))
    _b(f"{side}_side_result.{side}_face_maps.{side}_roi_outline_map", "map", kind=f"{side}_roi_outline_map")

# ---- detections -------------------------------------------------------------------------------------
DETECTION_KINDS = {"acne": "papules (light acne)", "acne_pustule": "pustules", "acne_nodule": "nodules",
                   "acne_mark": "acne marks", "closed_comedones": "closed comedones", "mole": "moles",
                   "brown_spot": "brown spots"}
for kind in DETECTION_KINDS:
    _b(f"result.{kind}", "detections", kind=kind)
for side in ("left", "right"):
    for kind in ("acne", "acne_pustule", "acne_nodule", "acne_mark", "closed_comedones"):
        _b(f"{side}_side_result.{side}_acne_info.{kind}", "detections", kind=kind, side=side)
    for kind in ("mole", "brown_spot"):
        _b(f"{side}_side_result.{side}_melanin_info.{kind}", "detections", kind=kind, side=side)

# ---- outlines and marks -----------------------------------------------------------------------------
WRINKLE_OUTLINES = {"head": "forehead", "glabella": "glabella", "left_cheek": "left_cheek",
                    "right_cheek": "right_cheek", "left_nasolabial": "left_nasolabial",
                    "right_nasolabial": "right_nasolabial", "left_crowsfeet": "left_crowsfeet",
                    "right_crowsfeet": "right_crowsfeet", "left_mouth": "left_mouth", "right_mouth": "right_mouth",
                    "left_eye": "left_eye", "right_eye": "right_eye"}
for api, region in WRINKLE_OUTLINES.items():
    _b(f"result.wrinkle_mark.{api}_wrinkle_outline", "points", kind="wrinkle_outline", region=region)
for side in ("left", "right"):
    _b(f"result.dark_circle_outline.{side}_dark_circle_outline", "points", kind="dark_circle_outline",
       region=f"{side}_eye")
    _b(f"result.cheekbone_mark.{side}_cheekbone_mark", "points", kind="cheekbone_mark", region=f"{side}_cheek")
_b("result.melanin_mark.polygon", "polygons", kind="melanin_mark", region="whole_face")
_b("result.sensitivity_mark.polygon", "polygons", kind="sensitivity_mark", region="whole_face")

# ---- boxes (single rectangles) --------------------------------------------------------------------
BOXES = {"result.dark_circle_mark.left_eye_rect": ("dark_circle", "left_eye"),
         "result.dark_circle_mark.right_eye_rect": ("dark_circle", "right_eye"),
         "result.left_eye_pouch_rect": ("eye_pouch", "left_eye"),
         "result.right_eye_pouch_rect": ("eye_pouch", "right_eye"),
         "result.enhanced_bw_info.enhanced_bw_rect": ("enhanced_bw", "whole_face"),
         f"{IQ}.face_rect": ("quality_face", "whole_face")}
for path, (kind, region) in BOXES.items():
    for side in ("left", "top", "width", "height"):
        legacy = ()
        if kind == "eye_pouch":  # the v1.6.6 document's *_eye_pouch_rectangle: a list of one box
            legacy = (path.replace("_rect", "_rectangle") + f".0.{side}",)
        _f(f"{path}.{side}", "boxes", side, [("kind", kind), ("region", region)], unit="px",
           description=f"{kind} box {side}.", variants=legacy)
_f("result.enhanced_bw_info.ratio", "boxes", "ratio", [("kind", "enhanced_bw"), ("region", "whole_face")],
   description="Crop ratio of the black-and-white enhanced map (x_enh = (x - left) * ratio).")

# ---- maps -----------------------------------------------------------------------------------------
MAP_NAMES = ("red_area", "brown_area", "texture_enhanced_pores", "texture_enhanced_blackheads",
             "texture_enhanced_oily_area", "texture_enhanced_lines", "water_area", "rough_area", "roi_outline_map",
             "texture_enhanced_bw")
for name in MAP_NAMES:
    _b(f"result.face_maps.{name}", "map", kind=name)

# Documented "json string" fields: a string here is JSON text to decode before walking it.
JSON_TEXT_PATHS = frozenset({"left_side_result", "right_side_result", "result.image_quality"})

# --------------------------------------------------------------------------------------------
# Indexes used by the flattener (every declared path and variant -> its declaration)
# --------------------------------------------------------------------------------------------
FIELDS: dict[str, Field] = {}
for _fld in _FIELDS:
    for _p in (_fld.path, *_fld.variants):
        assert _p not in FIELDS, f"duplicate declaration of {_p}"
        FIELDS[_p] = _fld
BLOCKS: dict[str, Block] = {}
for _blk in _BLOCKS:
    for _p in (_blk.path, *_blk.variants):
        assert _p not in BLOCKS and _p not in FIELDS, f"duplicate declaration of {_p}"
        BLOCKS[_p] = _blk
DECLARED_FIELDS: tuple[Field, ...] = tuple(_FIELDS)
DECLARED_BLOCKS: tuple[Block, ...] = tuple(_BLOCKS)

# --------------------------------------------------------------------------------------------
# Table schemas (Parquet and DuckDB both derive from these)
# --------------------------------------------------------------------------------------------
POINT = pa.struct([("x", pa.float64()), ("y", pa.float64())])
S, F, I, B, T = pa.string(), pa.float64(), pa.int64(), pa.bool_(), pa.timestamp("us", tz="UTC")
TABLES: dict[str, pa.Schema] = {
    "analyses": pa.schema([
        ("analysis_id", S), ("source", S), ("photo", S), ("photo_sha256", S), ("request_id", S), ("log_id", S),
        ("ok", B), ("error_code", I), ("http_status", I), ("error_status", S), ("error_message", S),
        ("error_code_message", S), ("error_code_str", S), ("error_msg", S),
        ("face_left", F), ("face_top", F), ("face_width", F), ("face_height", F), ("face_ratio", F),
        ("yaw", F), ("pitch", F), ("roll", F), ("hair_occlusion", F), ("glasses", I), ("skin_age", F),
        ("skin_type", I), ("ingested_at", T), ("api_generation", S), ("api_generation_basis", S), ("called_at", T),
        ("sentinel", S), ("batch", S), ("batch_position", S)]),
    "scores": pa.schema([("analysis_id", S), ("metric", S), ("value", F)]),
    "counts": pa.schema([("analysis_id", S), ("feature", S), ("region", S), ("value", F)]),
    "areas": pa.schema([("analysis_id", S), ("feature", S), ("region", S), ("value", F)]),
    "severities": pa.schema([("analysis_id", S), ("feature", S), ("region", S), ("value", F),
                             ("confidence", F), ("label", S)]),
    "tones": pa.schema([("analysis_id", S), ("ita", F), ("ita_class", I), ("ha", F), ("ha_class", I),
                        ("skin_tone", I), ("skin_tone_confidence", F)]),
    "wrinkles": pa.schema([("analysis_id", S), ("region", S)] + [(m, F) for m in WRINKLE_MEASURES]),
    "detections": pa.schema([("analysis_id", S), ("kind", S), ("side", S), ("idx", I), ("left", F), ("top", F),
                             ("width", F), ("height", F), ("confidence", F), ("polygon", pa.list_(POINT))]),
    "outlines": pa.schema([("analysis_id", S), ("kind", S), ("region", S), ("side", S), ("idx", I),
                           ("points", pa.list_(POINT)), ("depth", F), ("length", F)]),
    "side_results": pa.schema([("analysis_id", S), ("side", S), ("jawline_quality", I), ("jawline_angle", F),
                               ("jawline_angle_level", I)]),
    "boxes": pa.schema([("analysis_id", S), ("kind", S), ("region", S), ("left", F), ("top", F), ("width", F),
                        ("height", F), ("ratio", F)]),
    "maps": pa.schema([("analysis_id", S), ("name", S), ("path", S), ("media_type", S), ("width", I),
                       ("height", I), ("bytes", I)]),
    "extras": pa.schema([("analysis_id", S), ("path", S), ("value", S)]),
    "rejects": pa.schema([("source", S), ("reason", S), ("at", T)]),
    "sources": pa.schema([("source", S), ("size", I), ("mtime_ns", I), ("analysis_id", S)]),
}
TABLES.update({t: keys.keyed(TABLES[t]) for t in keys.KEYED if t in TABLES})  # the joins' integer key
# Session metadata (subject, visit, time, free manifest columns) and subjects are stored apart from the
# response tables (the `sessions` and `subjects` tables of the store), so a later manifest re-assigns
# sessions without re-ingesting anything; the latest assignment wins, the earlier stays in the history.

# A capture's own columns that capture QC reads (`skintrack.analysis.qc`), and the table each comes from: the
# session index keeps them beside each capture, so a metric's records need no join beyond the index.
CAPTURE = {"yaw": "analyses", "pitch": "analyses", "face_width": "analyses", "face_height": "analyses",
           "glasses": "analyses", "hair_occlusion": "analyses", "face_ratio": "analyses", "ita": "tones", "ha": "tones",
           "ita_class": "tones", "ha_class": "tones", "ingested_at": "analyses"}
CAPTURE_SQL = ", ".join(f"{table}.{column}" for column, table in CAPTURE.items())  # from tables named as above

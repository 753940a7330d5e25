"""The pure flattener: real responses of every version, documented variants, bad documents."""
import copy

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skintrack import InvalidResponse, flatten
from skintrack.tables.schema import BLOCKS, FIELDS

from conftest import REAL, REAL_IDS, load


def row(rows, table, **key):
    hits = [r for r in rows[table] if all(r.get(k) == v for k, v in key.items())]
    assert len(hits) == 1, (table, key, hits)
    return hits[0]


@pytest.mark.parametrize("path", REAL, ids=REAL_IDS)
def test_real_responses_leave_nothing_unmapped(path):
    rows = flatten(orjson.loads(path.read_bytes()))
    extras = sorted(e["path"] for e in rows["extras"])
    if path.name == "seed-example.json":  # empty maps and empty v1.6.6 eye-pouch lists: kept, not dropped
        assert extras == sorted(["result.left_eye_pouch_rectangle", "result.right_eye_pouch_rectangle"]
                                + [f"result.face_maps.{m}" for m in (
                                    "red_area", "brown_area", "texture_enhanced_pores", "texture_enhanced_blackheads",
                                    "texture_enhanced_oily_area", "texture_enhanced_lines", "water_area", "rough_area",
                                    "roi_outline_map", "texture_enhanced_bw")])
    else:
        assert extras == []


def test_current_format_golden_values():
    rows = flatten(load("real/ailabtools-docs-case1/response-v1.7.json"))
    assert row(rows, "scores", metric="total")["value"] == 70.0
    assert row(rows, "scores", metric="pores.left_cheek")["value"] == 76.0
    assert row(rows, "scores", metric="dark_circle.left")["value"] == 59.0
    assert row(rows, "counts", feature="blackhead", region="nose")["value"] == 61.0
    assert row(rows, "counts", feature="enlarged_pore", region="chin")["value"] == 98.0
    assert row(rows, "counts", feature="brown_spot", region="front")["value"] == 12.0
    assert row(rows, "areas", feature="oily", region="whole_face")["value"] == 0.45
    assert row(rows, "areas", feature="rough", region="chin")["value"] == 0.299
    sev = row(rows, "severities", feature="pores", region="left_cheek")
    assert (sev["value"], sev["confidence"], sev["label"]) == (1.0, 1.0, "Mild")
    assert row(rows, "severities", feature="water", region=None)["label"] == "Mild"  # 30 -> score 70
    assert row(rows, "severities", feature="crows_feet", region="left")["label"] == "Severe"
    assert rows["tones"] == [{"ita": 50.709312, "ita_class": 1, "ha": 37.006607, "ha_class": 2, "skin_tone": 2,
                              "skin_tone_confidence": 0.50994545}]
    w = row(rows, "wrinkles", region="left_nasolabial")
    assert (w["deep_num"], w["shallow_num"]) == (1, 0)
    a = rows["analyses"][0]
    assert (a["ok"], a["face_width"], a["glasses"], a["skin_type"], a["yaw"]) == (True, 552.0, 0, 3, 8.7511635)
    lines = [r for r in rows["outlines"] if r["kind"] == "wrinkle_line" and r["region"] == "forehead"]
    assert len(lines) == 21 and lines[0]["depth"] == 0.5960190136660726 and len(lines[0]["points"]) == 66
    melanin = [r for r in rows["outlines"] if r["kind"] == "melanin_mark"]
    assert len(melanin) == 141 and len(melanin[0]["points"]) == 377
    assert {m["name"] for m in rows["maps"]} == {
        "brown_area", "red_area", "roi_outline_map", "rough_area", "texture_enhanced_blackheads",
        "texture_enhanced_bw", "texture_enhanced_lines", "texture_enhanced_oily_area", "texture_enhanced_pores",
        "water_area"}


def test_empty_polygon_entries_are_kept_as_empty_lists():
    rows = flatten(load("real/ailabtools-docs-case2/response-v1.7.json"))
    comedones = [r for r in rows["detections"] if r["kind"] == "closed_comedones"]
    assert len(comedones) == 7 and comedones[0]["polygon"] == [] and comedones[0]["width"] is not None


def test_old_format_counts_detections_from_boxes_and_has_no_whole_face_oil():
    old = flatten(load("real/ailabtools-docs-case1/response-old.json"))
    new = flatten(load("real/ailabtools-docs-case1/response-v1.7.json"))
    def detected(rows):
        return {r["feature"]: r["value"] for r in rows["counts"] if r["region"] == "front"}

    assert detected(old) == detected(new) == {"acne": 1, "acne_mark": 1, "acne_nodule": 0, "acne_pustule": 0,
                                              "brown_spot": 12, "closed_comedones": 1, "mole": 0}
    assert not [r for r in old["areas"] if r["feature"] == "oily" and r["region"] == "whole_face"]


def test_seed_document_variants_land_in_the_same_columns():
    rows = flatten(load("seed-example.json"))
    assert row(rows, "severities", feature="pores", region="left_cheek")["value"] == 0.0  # pores_leftcheek
    assert row(rows, "counts", feature="enlarged_pore", region="forehead")["value"] == 0.0  # {count, area}
    assert row(rows, "areas", feature="enlarged_pore", region="forehead")["value"] == 0.0
    assert row(rows, "severities", feature="skin_type_neutral", region=None)["value"] == 1.0  # details object
    assert rows["analyses"][0]["face_ratio"] == 0.3  # "face_ratio:"
    assert {r["side"]: r["jawline_angle"] for r in rows["side_results"]} == {"left": 122.73, "right": 122.73}
    assert rows["analyses"][0]["error_code_str"] == ""


def test_side_results_as_json_text_with_v176_blocks():
    doc = load("real/community-2025-full.json")
    side = {"left_jawline_info": {"left_jawline_quality": 1, "left_jawline_angle": 118.5,
                                  "left_jawline_mark": [{"x": 1, "y": 2}, {"x": 3, "y": 4}],
                                  "left_jawline_angle_level": 0},
            "left_face_maps": {"left_roi_outline_map": "iVBORw0KGgo="},
            "left_acne_info": {"score": 88, "acne": {"rectangle": [{"left": 1, "top": 2, "width": 3, "height": 4}],
                                                     "confidence": [0.5], "polygon": [[]], "count": 1}},
            "left_melanin_info": {"mole": {"rectangle": [], "confidence": [], "polygon": [], "count": 0}}}
    doc["left_side_result"] = orjson.dumps(side).decode()  # documented as "json string"
    rows = flatten(doc)
    assert row(rows, "side_results", side="left") == {"side": "left", "jawline_quality": 1, "jawline_angle": 118.5,
                                                      "jawline_angle_level": 0}
    assert row(rows, "scores", metric="acne.left")["value"] == 88.0
    assert row(rows, "counts", feature="acne", region="left")["value"] == 1.0
    assert row(rows, "counts", feature="mole", region="left")["value"] == 0.0
    assert row(rows, "detections", kind="acne", side="left")["width"] == 3.0
    assert row(rows, "outlines", kind="jawline_mark", side="left")["points"] == [{"x": 1.0, "y": 2.0},
                                                                                 {"x": 3.0, "y": 4.0}]
    assert row(rows, "maps", name="left_roi_outline_map")["data"] == "iVBORw0KGgo="


@pytest.mark.parametrize("name", ["current-docs-422-no-face", "legacy-docs-422-no-face", "newest-docs-no-face"])
def test_error_envelopes(name):
    a = flatten(load(f"real/errors/{name}.json"))["analyses"][0]
    assert a["ok"] is False and a["error_status"] == "ERROR_NO_FACE_IN_FILE"
    assert a["error_message"] == "pic not has face"
    if name == "legacy-docs-422-no-face":
        assert (a["error_code"], a["error_code_str"]) == (422, "FILE_CONTENT_NON_COMPLIANCE")


def test_unknown_keys_are_kept_in_extras_with_their_path():
    doc = load("real/community-2025-full.json")
    doc["result"]["brand_new_block"] = {"level": 3, "areas": [0.1, {"x": None}]}
    doc["api_version"] = "9.9"
    extras = {e["path"]: e["value"] for e in flatten(doc)["extras"]}
    assert extras == {"result.brand_new_block.level": "3", "result.brand_new_block.areas.0": "0.1",
                      "result.brand_new_block.areas.1.x": "null", "api_version": '"9.9"'}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["result"]["score_info"].update(total_score="85"), "result.score_info.total_score: expected a number"),
    (lambda d: d["result"]["blackhead"].update(value=True), "result.blackhead.value: expected a number"),
    (lambda d: d["result"]["skin_type"].update(skin_type=2.5), "result.skin_type.skin_type: expected a whole number"),
    (lambda d: d["result"]["score_info"].update(total_score=150), "result.score_info.total_score: 150 is outside the "
                                                                  "documented range 0..100"),
    (lambda d: d["result"]["score_info"].update(water_score=-50), "water_score: -50 is outside the documented range"),
    (lambda d: d["result"]["water"].update(water_area=-0.3), "result.water.water_area: -0.3 is outside"),
    (lambda d: d["result"]["wrinkle_count"].update(forehead_count=-2), "forehead_count: -2 is outside"),
    (lambda d: d["result"]["image_quality"].update(glasses=5), "glasses: 5 is outside the documented values 0, 1"),
    (lambda d: d["result"]["skintone_ita"].update(skintone=99), "skintone: 99 is outside the documented values 0, 1, 2"),
    (lambda d: d["result"]["image_quality"].update(face_ratio=5), "face_ratio: 5 is outside the documented range 0..1"),
    (lambda d: d["result"]["skin_age"].update(value=-3), "skin_age.value: -3 is outside the documented range 0..100"),
    (lambda d: d["error_detail"].update(status_code=2 ** 64 - 1), "error_detail.status_code: 18446744073709551615 "
                                                                  "does not fit a 64-bit whole number"),
    (lambda d: d["result"]["skin_type"].update(skin_type=2 ** 70), "skin_type.skin_type: .* does not fit a 64-bit"),
    (lambda d: d.update(result=None), "`result` is null"),
    (lambda d: d.update(result=[]), "`result` is list, expected an object"),
    (lambda d: d["result"].update(acne="none"), "result.acne: expected dict"),
    (lambda d: d.pop("result"), "response has no `result` and reports no error"),
    (lambda d: d.update(left_side_result="{not json"), "left_side_result: documented as JSON text"),
])
def test_malformed_responses_name_the_path(mutate, message):
    doc = load("real/community-2025-full.json")
    mutate(doc)
    with pytest.raises(InvalidResponse, match=message.replace("(", r"\(").replace(")", r"\)")):
        flatten(doc)


@pytest.mark.parametrize("bad", [{"X": 1, "Y": 2}, {"x": 1, "y": 2, "z": 3}, {"x": True, "y": 2}, 7, ["x", "y"],
                                 {"x": "1", "y": 2}])
def test_points_that_do_not_fit_are_kept_whole_in_extras(bad):
    doc = load("real/community-2025-full.json")
    doc["result"]["acne"]["polygon"][0].append(bad)
    rows = flatten(doc)
    row = next(r for r in rows["detections"] if r["kind"] == "acne" and r["idx"] == 0)
    assert row["polygon"] is None
    kept = [e for e in rows["extras"] if e["path"] == "result.acne.polygon.0"]
    assert len(kept) == 1 and orjson.loads(kept[0]["value"])[-1] == bad


def _point_lists(node, path=""):
    """(JSON path, list) of every non-empty list of {x, y} points in a response."""
    if isinstance(node, list) and node and all(isinstance(p, dict) and set(p) == {"x", "y"} for p in node):
        yield path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from _point_lists(v, f"{path}.{k}" if path else str(k))


ODD_POINTS = [{"X": 1, "Y": 2}, {"x": 1, "y": 2, "z": 3}, {"x": True, "y": 2}, {"x": None, "y": 2}, 7, ["x", "y"],
              {"x": "1", "y": 2}, {"x": 1}, {}, None, {"y": 1, "z": 2}]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_an_odd_point_sends_its_own_list_to_extras_and_no_other(data):
    """The point lists of a response are checked in one pass, and a response with an odd point is walked again
    list by list: whichever lists (polygons, outlines, wrinkle lines) get an odd point, exactly those are kept
    whole in extras, and every other row is the clean response's."""
    doc = load("real/ailabtools-docs-case1/response-v1.7.json")  # 423 lists: polygons, outlines, wrinkle lines
    clean = flatten(copy.deepcopy(doc))
    lists = list(_point_lists(doc))
    chosen = data.draw(st.lists(st.sampled_from(range(len(lists))), min_size=1, max_size=4, unique=True))
    for i in chosen:
        points = lists[i][1]
        points.insert(data.draw(st.integers(0, len(points))), data.draw(st.sampled_from(ODD_POINTS)))
    rows = flatten(doc)
    odd = {lists[i][0]: lists[i][1] for i in chosen}
    assert {e["path"]: orjson.loads(e["value"]) for e in rows["extras"] if e["path"] in odd} == odd
    assert [e for e in rows["extras"] if e["path"] not in odd] == clean["extras"]
    gone = 0
    for table, column in (("detections", "polygon"), ("outlines", "points")):
        assert len(rows[table]) == len(clean[table])
        for new, old in zip(rows[table], clean[table]):
            if new[column] is None and old[column] is not None:
                gone += 1
                new = {**new, column: old[column]}
            assert new == old
    assert gone == len(chosen)
    assert {t: r for t, r in rows.items() if t not in ("detections", "outlines", "extras")} == \
        {t: r for t, r in clean.items() if t not in ("detections", "outlines", "extras")}


@pytest.mark.parametrize("doc", [[1, 2], "text", 3, None])
def test_top_level_must_be_an_object(doc):
    with pytest.raises(InvalidResponse, match="top-level JSON value is"):
        flatten(doc)


def test_absurd_nesting_is_refused():
    doc = load("real/community-2025-full.json")
    deep = node = {}
    for _ in range(200):
        node["a"] = {}
        node = node["a"]
    doc["result"]["deep"] = deep
    with pytest.raises(InvalidResponse, match="nesting deeper than"):
        flatten(doc)


def _leaves(node, path=""):
    if isinstance(node, dict):
        if not node and path:
            yield path
        for k, v in node.items():
            yield from _leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        if not node:
            yield path
        for i, v in enumerate(node):
            yield from _leaves(v, f"{path}.{i}")
    else:
        yield path


json_leaf = st.one_of(st.none(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=5))
json_tree = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(
    st.sampled_from(["a", "b", "value", "count", "x"]), c, max_size=3), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(extra=st.dictionaries(st.sampled_from(["novel", "score_info", "water", "zz"]), json_tree, max_size=3))
def test_every_leaf_is_mapped_or_kept(extra):
    """Property: for any additions, each leaf is in a declared field, a declared block, or extras; or the
    document is refused with InvalidResponse (never another exception)."""
    doc = copy.deepcopy(load("real/community-2025-full.json"))
    doc["result"].update(extra)
    try:
        rows = flatten(doc)
    except InvalidResponse:
        return
    kept = {e["path"] for e in rows["extras"]}
    for leaf in _leaves(doc):
        declared = leaf in FIELDS or any(leaf == b or leaf.startswith(b + ".") for b in BLOCKS)
        assert declared or leaf in kept, leaf

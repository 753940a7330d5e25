"""Pure flattening of one Skin Analyze Pro response into rows of the study tables.

Response dict in, rows out: no files, no network, no clock. Every scalar leaf lands in a declared
column (``schema.FIELDS``), a declared block (detections, outlines, wrinkle lines, maps), or ``extras``
with its JSON path, so nothing is lost whatever the API version.

Example
-------
>>> rows = flatten({"error_code": 0, "result": {"score_info": {"total_score": 81}, "new_key": 1}})
>>> rows["scores"]
[{'metric': 'total', 'value': 81.0}]
>>> rows["extras"]
[{'path': 'result.new_key', 'value': '1'}]
"""
from __future__ import annotations

import orjson

from .errors import InvalidResponse
from .schema import BLOCKS, FIELDS, JSON_TEXT_PATHS, LABELS, SEVERITY_100_BANDS, TABLES

MAX_DEPTH = 48
_KEY_TABLES = ("analyses", "scores", "counts", "areas", "severities", "tones", "wrinkles", "side_results", "boxes")
_LIST_TABLES = ("detections", "outlines", "maps", "extras")


def flatten(doc) -> dict[str, list[dict]]:
    """Flatten one parsed response into ``{table: [row, ...]}`` (rows carry no analysis_id).

    Raises `InvalidResponse` naming the JSON path when the document is not a response.
    """
    if not isinstance(doc, dict):
        raise InvalidResponse(f"top-level JSON value is {type(doc).__name__}, expected an object")
    failed = _is_error(doc)
    if not failed and "result" not in doc:
        raise InvalidResponse("response has no `result` and reports no error")
    keyed: dict[tuple, dict] = {}
    lists: dict[str, list] = {t: [] for t in _LIST_TABLES}
    _walk(doc, "", 0, keyed, lists)
    out = {t: [] for t in _KEY_TABLES}
    for (table, key), row in keyed.items():
        out[table].append(row)
    out.update(lists)
    analysis = out["analyses"][0] if out["analyses"] else {}
    out["analyses"] = [analysis]
    analysis["ok"] = not failed
    for row in out["severities"]:
        row["label"] = _label(row)
    return out


def _is_error(doc: dict) -> bool:
    detail = doc.get("error_detail")
    code = detail.get("code") if isinstance(detail, dict) else None
    return bool(code) or doc.get("error_code") not in (0, None) or ("result" not in doc and bool(doc.get("error_msg")))


def _walk(node, path: str, depth: int, keyed: dict, lists: dict) -> None:
    if depth > MAX_DEPTH:
        raise InvalidResponse(f"{path}: nesting deeper than {MAX_DEPTH} levels")
    block = BLOCKS.get(path)
    if block is not None:
        _HANDLERS[block.handler](node, path, block, keyed, lists)
        return
    if isinstance(node, dict):
        if not node and path:
            lists["extras"].append({"path": path, "value": "{}"})
        for k, v in node.items():
            _walk(v, f"{path}.{k}" if path else k, depth + 1, keyed, lists)
    elif isinstance(node, list):
        if not node:
            lists["extras"].append({"path": path, "value": "[]"})
        for i, v in enumerate(node):
            _walk(v, f"{path}.{i}", depth + 1, keyed, lists)
    elif isinstance(node, str) and path in JSON_TEXT_PATHS:
        try:
            inner = orjson.loads(node)
        except orjson.JSONDecodeError as e:
            raise InvalidResponse(f"{path}: documented as JSON text but is not valid JSON ({e})") from None
        _walk(inner, path, depth + 1, keyed, lists)
    else:
        field = FIELDS.get(path)
        if field is None:
            lists["extras"].append({"path": path, "value": orjson.dumps(node).decode()})
            return
        key = (field.table, field.key)
        row = keyed.get(key)
        if row is None:
            row = keyed[key] = dict(field.key)
        row[field.column] = _check(node, field, path)


def _check(value, field, path):
    if value is None:
        return None
    if field.kind == "text":
        if not isinstance(value, str):
            raise InvalidResponse(f"{path}: expected text, got {type(value).__name__} {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidResponse(f"{path}: expected a number, got {type(value).__name__} {value!r}")
    if field.table == "scores" or field.column in ("value", "confidence"):
        return float(value)
    schema_type = TABLES[field.table].field(field.column).type
    if str(schema_type) == "int64":
        if value != int(value):
            raise InvalidResponse(f"{path}: expected a whole number, got {value!r}")
        return int(value)
    return float(value)


def _label(row):
    value, feature = row.get("value"), row["feature"]
    field = FIELDS_BY_SEVERITY.get(feature)
    if value is None or field is None or field.labels is None:
        return None
    if field.labels == "severity_100":
        return next(label for top, label in SEVERITY_100_BANDS if value <= top or top == 100)
    return LABELS[field.labels].get(int(value)) if value == int(value) else None


FIELDS_BY_SEVERITY = {dict(f.key)["feature"]: f for f in FIELDS.values() if f.table == "severities"
                      and f.column == "value"}


# ---- block handlers ---------------------------------------------------------------------------------
def _number(value, path):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidResponse(f"{path}: expected a number, got {type(value).__name__} {value!r}")
    return float(value)


def _points(node, path):
    if not isinstance(node, list):
        raise InvalidResponse(f"{path}: expected a list of points, got {type(node).__name__}")
    out = []
    for i, p in enumerate(node):
        if not isinstance(p, dict) or set(p) != {"x", "y"}:
            raise InvalidResponse(f"{path}.{i}: expected a point {{x, y}}, got {p!r:.80}")
        out.append({"x": _number(p["x"], f"{path}.{i}.x"), "y": _number(p["y"], f"{path}.{i}.y")})
    return out


def _expect(node, typ, path):
    if not isinstance(node, typ):
        raise InvalidResponse(f"{path}: expected {typ.__name__}, got {type(node).__name__}")


def _detections(node, path, block, keyed, lists):
    _expect(node, dict, path)
    rects, conf, polys = node.get("rectangle", []), node.get("confidence", []), node.get("polygon", [])
    for name, part in (("rectangle", rects), ("confidence", conf), ("polygon", polys)):
        _expect(part, list, f"{path}.{name}")
    for i in range(max(len(rects), len(conf), len(polys))):
        rect = rects[i] if i < len(rects) else {}
        _expect(rect, dict, f"{path}.rectangle.{i}")
        row = {"kind": block.kind, "side": block.side, "idx": i,
               "confidence": _number(conf[i], f"{path}.confidence.{i}") if i < len(conf) else None,
               "polygon": _points(polys[i], f"{path}.polygon.{i}") if i < len(polys) else None}
        for side in ("left", "top", "width", "height"):
            row[side] = _number(rect[side], f"{path}.rectangle.{i}.{side}") if side in rect else None
        for k, v in rect.items():
            if k not in row:
                lists["extras"].append({"path": f"{path}.rectangle.{i}.{k}", "value": orjson.dumps(v).decode()})
        lists["detections"].append(row)
    # Responses from before `count` existed: the count of a detection block is its number of boxes.
    count = _number(node["count"], f"{path}.count") if "count" in node else float(len(rects))
    keyed[("counts", ("detection", block.kind, block.side))] = {"feature": block.kind, "region": block.side,
                                                                "value": count}
    for k, v in node.items():
        if k not in ("rectangle", "confidence", "polygon", "count"):
            lists["extras"].append({"path": f"{path}.{k}", "value": orjson.dumps(v).decode()})


def _point_list(node, path, block, keyed, lists):
    lists["outlines"].append({"kind": block.kind, "region": block.region, "side": block.side, "idx": 0,
                              "points": _points(node, path), "depth": None, "length": None})


def _polygons(node, path, block, keyed, lists):
    _expect(node, list, path)
    for i, poly in enumerate(node):
        lists["outlines"].append({"kind": block.kind, "region": block.region, "side": block.side, "idx": i,
                                  "points": _points(poly, f"{path}.{i}"), "depth": None, "length": None})


def _wrinkle_lines(node, path, block, keyed, lists):
    _expect(node, list, path)
    for i, line in enumerate(node):
        p = f"{path}.{i}"
        _expect(line, dict, p)
        row = {"kind": block.kind, "region": block.region, "side": block.side, "idx": i,
               "points": _points(line.get("wrinkle_coord", []), f"{p}.wrinkle_coord"),
               "depth": _number(line["wrinkle_depth"], f"{p}.wrinkle_depth") if "wrinkle_depth" in line else None,
               "length": _number(line["wrinkle_length"], f"{p}.wrinkle_length") if "wrinkle_length" in line else None}
        for k, v in line.items():
            if k not in ("wrinkle_coord", "wrinkle_depth", "wrinkle_length"):
                lists["extras"].append({"path": f"{p}.{k}", "value": orjson.dumps(v).decode()})
        lists["outlines"].append(row)


def _map(node, path, block, keyed, lists):
    if not isinstance(node, str):
        raise InvalidResponse(f"{path}: expected a base64 image, got {type(node).__name__}")
    if not node:
        lists["extras"].append({"path": path, "value": '""'})
    else:
        lists["maps"].append({"name": block.kind, "data": node})


_HANDLERS = {"detections": _detections, "points": _point_list, "polygons": _polygons,
             "wrinkle_lines": _wrinkle_lines, "map": _map}

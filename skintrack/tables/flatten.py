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

import itertools
import operator

import orjson

from ..errors import InvalidResponse
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
    if not failed and not isinstance(doc["result"], dict):
        kind = "null" if doc["result"] is None else f"{type(doc['result']).__name__}, expected an object"
        raise InvalidResponse(f"`result` is {kind}, and the response reports no error")
    keyed, lists = _walked(doc, checked=False)
    if not _all_points(lists.pop(_UNCHECKED)):  # an odd point somewhere: walk again, each list checked by itself
        keyed, lists = _walked(doc, checked=True)
    out = {t: [] for t in _KEY_TABLES}
    for (table, _), row in keyed.items():
        out[table].append(row)
    out.update(lists)
    analysis = out["analyses"][0] if out["analyses"] else {}
    out["analyses"] = [analysis]
    analysis["ok"] = not failed
    for row in out["severities"]:
        row["label"] = _label(row)
    return out


def _walked(doc: dict, checked: bool) -> tuple[dict, dict]:
    """The response's keyed rows and list rows. Unless `checked`, the point lists are taken as they are and
    listed under `_UNCHECKED`, to be checked in one pass over the whole response (`_all_points`)."""
    keyed: dict[tuple, dict] = {}
    lists: dict[str, list] = {t: [] for t in _LIST_TABLES}
    if not checked:
        lists[_UNCHECKED] = []
    _walk(doc, _TREE, 0, keyed, lists)
    return keyed, lists


def _is_error(doc: dict) -> bool:
    detail = doc.get("error_detail")
    code = detail.get("code") if isinstance(detail, dict) else None
    return bool(code) or doc.get("error_code") not in (0, None) or ("result" not in doc and bool(doc.get("error_msg")))


class _Node:
    """One step of the path tree compiled from the declarations (so walking builds no path strings)."""

    __slots__ = ("path", "field", "slot", "coerce", "block", "children", "json_text")

    def __init__(self, path):
        self.path, self.field, self.slot, self.coerce, self.block = path, None, None, None, None
        self.children: dict[str, _Node] = {}
        self.json_text = path in JSON_TEXT_PATHS


def _compile() -> _Node:
    root = _Node("")
    for table, decl in [("field", FIELDS), ("block", BLOCKS)]:
        for path, item in decl.items():
            node = root
            for part in path.split("."):
                node = node.children.setdefault(part, _Node(f"{node.path}.{part}" if node.path else part))
            if table == "block":
                node.block = item
            else:
                node.field, node.slot, node.coerce = item, (item.table, item.key), _checked(item)
    for path in JSON_TEXT_PATHS:
        node = root
        for part in path.split("."):
            node = node.children.setdefault(part, _Node(f"{node.path}.{part}" if node.path else part))
        node.json_text = True
    return root


def _coercer(field):
    if field.kind == "text":
        return _text
    if field.table != "scores" and field.column not in ("value", "confidence") and \
            str(TABLES[field.table].field(field.column).type) == "int64":
        return _whole
    return _float


def _checked(field):
    """The field's coercer, plus its documented range or label set (a value outside them is an error)."""
    coerce, (lo, hi) = _coercer(field), field.range
    allowed = LABELS.get(field.labels) if field.labels else None
    if allowed is None and lo is None and hi is None:
        return coerce
    shown = ", ".join(map(str, allowed)) if allowed else f"{'' if lo is None else lo}..{'' if hi is None else hi}"

    def check(value, path):
        v = coerce(value, path)
        if v is not None and ((allowed is not None and v not in allowed) or (lo is not None and v < lo)
                              or (hi is not None and v > hi)):
            raise InvalidResponse(f"{path}: {value!r} is outside the documented {'values' if allowed else 'range'} "
                                  f"{shown}")
        return v

    return check


def _text(value, path):
    if value is None or isinstance(value, str):
        return value
    raise InvalidResponse(f"{path}: expected text, got {type(value).__name__} {value!r}")


def _float(value, path):
    t = type(value)
    if t is float or t is int:
        return float(value)
    if value is None:
        return None
    raise InvalidResponse(f"{path}: expected a number, got {type(value).__name__} {value!r}")


INT64 = (-2 ** 63, 2 ** 63 - 1)


def _whole(value, path):
    v = _float(value, path)
    if v is None:
        return None
    if v != v or v in (float("inf"), float("-inf")) or v != int(v):
        raise InvalidResponse(f"{path}: expected a whole number, got {value!r}")
    if not INT64[0] <= int(value) <= INT64[1]:
        raise InvalidResponse(f"{path}: {value!r} does not fit a 64-bit whole number")
    return int(v)


def _walk(node, tree: _Node, depth: int, keyed: dict, lists: dict) -> None:
    if depth > MAX_DEPTH:
        raise InvalidResponse(f"{tree.path}: nesting deeper than {MAX_DEPTH} levels")
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = ((str(i), v) for i, v in enumerate(node))
    else:
        raise AssertionError("only containers are walked")
    children = tree.children
    for k, v in items:
        child = children.get(k)
        if child is None:
            _extras(v, f"{tree.path}.{k}" if tree.path else k, depth + 1, lists["extras"])
        elif child.block is not None:
            _HANDLERS[child.block.handler](v, child.path, child.block, keyed, lists)
        elif type(v) is dict or type(v) is list:
            if v and child.children:
                _walk(v, child, depth + 1, keyed, lists)
            else:
                _extras(v, child.path, depth + 1, lists["extras"])
        elif child.json_text and type(v) is str:
            try:
                inner = orjson.loads(v)
            except orjson.JSONDecodeError as e:
                raise InvalidResponse(f"{child.path}: documented as JSON text but is not valid JSON ({e})") from None
            _walk({k: inner}, tree, depth, keyed, lists) if isinstance(inner, (dict, list)) else \
                _extras(inner, child.path, depth + 1, lists["extras"])
        elif child.field is not None:
            row = keyed.get(child.slot)
            if row is None:
                row = keyed[child.slot] = dict(child.field.key)
            row[child.field.column] = child.coerce(v, child.path)
        else:
            _extras(v, child.path, depth + 1, lists["extras"])


def _extras(node, path: str, depth: int, out: list) -> None:
    """Keep every leaf of an undeclared value (empty containers too) with its JSON path."""
    if depth > MAX_DEPTH:
        raise InvalidResponse(f"{path}: nesting deeper than {MAX_DEPTH} levels")
    if isinstance(node, dict) and node:
        for k, v in node.items():
            _extras(v, f"{path}.{k}", depth + 1, out)
    elif isinstance(node, list) and node:
        for i, v in enumerate(node):
            _extras(v, f"{path}.{i}", depth + 1, out)
    else:
        out.append({"path": path, "value": orjson.dumps(node).decode()})


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
    """A number that must be present (inside detections and wrinkle lines)."""
    if value is None:
        raise InvalidResponse(f"{path}: expected a number, got None")
    return _float(value, path)


_UNCHECKED = "unchecked points"
_XY_OF = operator.itemgetter("x", "y")
_NUMBER = {int, float}


def _points(node, path, lists):
    """A list of {x, y} number points, or None with the whole list kept in extras when it is anything else
    (a point written {"X":..,"Y":..}, with an extra key or a boolean coordinate is never coerced or dropped).

    A first walk of a response only collects its point lists (`lists[_UNCHECKED]`): they are checked in
    one pass (`_all_points`), and only a response with an odd one is walked again with each list checked
    here. A response holds about 190 lists of 3,200 points; checking them list by list was 3/4 of `flatten`.
    """
    unchecked = lists.get(_UNCHECKED)
    if unchecked is not None:
        unchecked.append(node)
        return node
    if _all_points([node]):
        return node
    lists["extras"].append({"path": path, "value": orjson.dumps(node).decode()})
    return None


def _all_points(point_lists: list) -> bool:
    """Whether every one is a list of dicts of exactly x and y, each an int or a float (never a bool), in
    passes that run at C speed."""
    if not set(map(type, point_lists)) <= {list}:
        return False
    points = list(itertools.chain.from_iterable(point_lists))
    try:
        return not points or (set(map(type, points)) == {dict} and set(map(len, points)) == {2} and set(map(
            type, itertools.chain.from_iterable(map(_XY_OF, points)))) <= _NUMBER)
    except KeyError:  # a point of two keys that are not x and y
        return False


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
               "polygon": _points(polys[i], f"{path}.polygon.{i}", lists) if i < len(polys) else None}
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
                              "points": _points(node, path, lists), "depth": None, "length": None})


def _polygons(node, path, block, keyed, lists):
    _expect(node, list, path)
    for i, poly in enumerate(node):
        lists["outlines"].append({"kind": block.kind, "region": block.region, "side": block.side, "idx": i,
                                  "points": _points(poly, f"{path}.{i}", lists), "depth": None, "length": None})


def _wrinkle_lines(node, path, block, keyed, lists):
    _expect(node, list, path)
    for i, line in enumerate(node):
        p = f"{path}.{i}"
        _expect(line, dict, p)
        row = {"kind": block.kind, "region": block.region, "side": block.side, "idx": i,
               "points": _points(line.get("wrinkle_coord", []), f"{p}.wrinkle_coord", lists),
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
_TREE = _compile()

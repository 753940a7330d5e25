"""Nothing is lost: every leaf of every real response is found in a study table or in `extras`."""
import base64
from collections import Counter

import orjson
import pyarrow.parquet as pq
import pytest

import skintrack
from skintrack.tables.ingest import content_id

from conftest import REAL, REAL_IDS


def _leaf_values(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _leaf_values(v)
    elif isinstance(node, list):
        for v in node:
            yield from _leaf_values(v)
    elif isinstance(node, str):
        try:  # documented "json string" fields hold JSON text: their leaves are what must be kept
            inner = orjson.loads(node)
        except orjson.JSONDecodeError:
            inner = None
        if isinstance(inner, (dict, list)):
            yield from _leaf_values(inner)
        else:
            yield node
    elif node is not None:
        yield float(node) if not isinstance(node, bool) else node


@pytest.fixture(scope="module")
def real_study(tmp_path_factory):
    study = tmp_path_factory.mktemp("real")
    report = skintrack.ingest(REAL, study)
    assert report.added == len(REAL) and report.rejected == []
    return study


@pytest.mark.parametrize("path", REAL, ids=REAL_IDS)
def test_every_leaf_is_somewhere(real_study, path):
    aid = content_id(path.read_bytes())
    stored = Counter()
    for f in (real_study / "batches").glob("*/*.parquet"):
        if f.stem in ("sources", "rejects"):
            continue
        t = pq.read_table(f)
        if "analysis_id" not in t.column_names:
            continue
        for r in (r for r in t.to_pylist() if r["analysis_id"] == aid):
            if f.stem == "extras":
                stored.update(_leaf_values(orjson.loads(r["value"])))
            elif f.stem == "maps":
                stored[base64.b64encode((real_study / r["path"]).read_bytes()).decode()] += 1
            else:
                stored.update(_leaf_values({k: v for k, v in r.items()
                                            if k not in ("analysis_id", "source", "ingested_at")}))
    wanted = Counter(_leaf_values(orjson.loads(path.read_bytes())))
    missing = wanted - stored
    assert not missing, f"{sum(missing.values())} leaves lost, e.g. {list(missing.items())[:5]}"
    assert sum(wanted.values()) > 0

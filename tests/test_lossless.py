"""Nothing is lost: every leaf of every real response is found in a study table or in `extras`."""
import base64
from collections import Counter

import orjson
import pytest

import skintrack
from skintrack.tables import store
from skintrack.tables.ingest import content_id
from skintrack.tables.schema import TABLES

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


@pytest.fixture(scope="session")
def real_study(tmp_path_factory):
    study = tmp_path_factory.mktemp("real")
    report = skintrack.ingest(REAL, study)
    assert report.added == len(REAL) and report.rejected == []
    return study


@pytest.mark.parametrize("path", REAL, ids=REAL_IDS)
def test_every_leaf_is_somewhere(real_study, path):
    aid = content_id(path.read_bytes())
    stored = Counter()
    con = store.connect(real_study)  # the lake's tables as stored, at the study's newest version
    for table in TABLES:
        if table in ("sources", "rejects"):
            continue
        rows = con.execute(f"SELECT * FROM {store.LAKE}.main.{table} WHERE analysis_id = ?", [aid]).to_arrow_table()
        for r in rows.to_pylist():
            if table == "extras":
                stored.update(_leaf_values(orjson.loads(r["value"])))
            elif table == "maps":
                stored[base64.b64encode((real_study / r["path"]).read_bytes()).decode()] += 1
            else:
                stored.update(_leaf_values({k: v for k, v in r.items()
                                            if k not in ("analysis_id", "source", "ingested_at")}))
    wanted = Counter(_leaf_values(orjson.loads(path.read_bytes())))
    missing = wanted - stored
    assert not missing, f"{sum(missing.values())} leaves lost, e.g. {list(missing.items())[:5]}"
    assert sum(wanted.values()) > 0

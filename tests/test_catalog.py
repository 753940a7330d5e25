"""The metric catalog: complete, consistent with the contract's examples and the tables."""
import json

import pandas as pd
import pytest

import skintrack
from skintrack.tables.catalog import metric_info
from skintrack.tables.schema import REGIONS

CONTRACT_KEYS = """score.total score.acne score.pores score.pores.forehead score.dark_circle.left count.blackhead.nose
count.enlarged_pore.forehead count.fine_line.glabella count.wrinkle.left_nasolabial count.acne.front area.oily.t_zone
area.water.whole_face area.rough.chin area.brown.left_cheek area.sensitivity.whole_face severity.pores.forehead
severity.blackhead severity.crows_feet.left severity.water severity.melanin tone.ita tone.ha tone.ita_class
tone.ha_class tone.skin_tone wrinkle.forehead.norm_depth wrinkle.left_crowsfeet.score""".split()


def test_contract_examples_exist():
    assert set(CONTRACT_KEYS) <= set(skintrack.catalog()["key"])


def test_keys_are_unique_lowercase_and_well_formed():
    cat = skintrack.catalog()
    assert cat["key"].is_unique
    for r in cat.itertuples():
        assert r.key == r.key.lower() and r.key.split(".")[0] == r.family
        assert r.better in ("higher", "lower", "none") and r.description and r.paths
        assert pd.isna(r.region) or r.region in REGIONS


def test_labels_come_from_the_documents():
    assert json.loads(metric_info("severity.pores.chin")["labels"]) == {"0": "None", "1": "Mild", "2": "Moderate",
                                                                        "3": "Severe"}
    assert json.loads(metric_info("tone.ita_class")["labels"])["6"] == "Abnormal (lighting)"
    assert metric_info("score.skin_type")["better"] == "none"  # a type scale, not a health score


def test_unknown_metric_suggests_close_keys():
    with pytest.raises(skintrack.UnknownMetric, match="did you mean score.water"):
        metric_info("score.watr")


def test_cli_lists_the_catalog(run_cli):
    records = json.loads(run_cli("metrics", "--json", check=0).stdout)
    assert [r["key"] for r in records] == list(skintrack.catalog()["key"])
    assert "score.total" in run_cli("metrics", check=0).stdout

"""The SIMULATED sample trial obeys the documented rules, independently recomputed here."""
import hashlib
import random
from decimal import ROUND_HALF_UP, Decimal

import orjson
import pytest

from skintrack.sample import Latent, build_response, simulate_trial

PIG, RETE, STRUCT = (0, 7, 11, 16), (0, 9, 15, 20), (0, 11, 19, 28)
from conftest import responses


def rhu(x):
    return int(Decimal(str(x)).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def grade(n, bounds):
    return sum(n > b for b in bounds)


def check(doc):
    r, s = doc["result"], doc["result"]["score_info"]
    D = Decimal
    pc = r["enlarged_pore_count"]
    t = s["pores_type_score"]
    assert t["pores_forehead_score"] == rhu(100 - pc["forehead_count"] * D("0.1"))
    assert t["pores_leftcheek_score"] == rhu(100 - pc["left_cheek_count"] * D("0.22"))
    assert t["pores_rightcheek_score"] == rhu(100 - pc["right_cheek_count"] * D("0.22"))
    assert t["pores_jaw_score"] == rhu(100 - pc["chin_count"] * D("0.16"))
    assert s["pores_score"] == rhu(D(sum(t.values())) / 4)
    assert s["blackhead_score"] == rhu(100 - r["blackhead_count"] * D("0.3"))
    assert s["acne_score"] == rhu(100 - r["closed_comedones"]["count"] * D("1.7") - r["acne"]["count"] * D("2.4")
                                  - r["acne_pustule"]["count"] * D("4.8") - r["acne_nodule"]["count"] * D("9.8"))
    assert s["water_score"] == 100 - r["water"]["water_severity"]
    assert s["rough_score"] == 100 - r["rough"]["rough_severity"]
    assert s["melanin_score"] == 100 - r["melanin"]["melanin_concentration"]
    assert s["sensitivity_score"] == 100 - r["sensitivity"]["sensitivity_intensity"]
    side = {k: 100 - PIG[r[f"{k}_dark_circle_pigment"]["value"]] - RETE[r[f"{k}_dark_circle_rete"]["value"]]
            - STRUCT[r[f"{k}_dark_circle_structural"]["value"]] for k in ("left", "right")}
    assert s["dark_circle_type_score"] == {"left_dark_circle_score": side["left"],
                                           "right_dark_circle_score": side["right"]}
    assert s["dark_circle_score"] == max(30, side["left"] + side["right"] - 100)
    assert s["skin_type_score"] == rhu(100 - D(s["water_score"] + s["oily_intensity_score"]) / 2)
    total = ((s["wrinkle_score"] + s["pores_score"] + s["blackhead_score"] + s["acne_score"] + s["melanin_score"])
             * D("1.2") + (s["water_score"] + s["oily_intensity_score"] + s["rough_score"]) * D("0.5")
             + s["sensitivity_score"] + s["dark_circle_score"]) / 10
    assert s["total_score"] == max(70, rhu(total))
    assert r["blackhead"]["value"] == grade(r["blackhead_count"], (45, 90, 150))
    assert r["pores_forehead"]["value"] == grade(pc["forehead_count"], (100, 300, 500))
    assert r["pores_left_cheek"]["value"] == grade(pc["left_cheek_count"], (45, 136, 227))
    assert r["pores_jaw"]["value"] == grade(pc["chin_count"], (63, 188, 313))
    ita, ha = r["skintone_ita"]["ITA"], r["skin_hue_ha"]["HA"]
    ita_cls = 0 if 56 < ita <= 90 else 1 if 43 < ita <= 56 else 2 if 36 < ita <= 43 else 3 if 20 < ita <= 36 else \
        4 if 10 < ita <= 20 else 5 if -90 < ita <= 10 else 6
    ha_cls = 0 if 49 < ha <= 90 else 1 if 46 <= ha < 49 else 2 if 10 <= ha < 46 else 3
    assert (r["skintone_ita"]["skintone"], r["skin_hue_ha"]["skin_hue"]) == (ita_cls, ha_cls)
    for kind in ("acne", "mole", "brown_spot", "closed_comedones"):
        assert r[kind]["count"] == len(r[kind]["rectangle"]) == len(r[kind]["polygon"])
    assert doc["simulated"].startswith("SIMULATED")


def test_sample_trial_obeys_the_documented_rules(sample):
    files = responses(sample / "responses")
    assert len(files) == 96
    for f in files:
        check(orjson.loads(f.read_bytes()))


@pytest.mark.parametrize("seed", range(40))
def test_random_faces_obey_the_documented_rules(seed):
    check(build_response(Latent.draw(random.Random(seed)), random.Random(seed + 1000)))


def test_regenerating_from_the_seed_reproduces_data(sample, tmp_path):
    simulate_trial(tmp_path)
    for name in ("manifest.csv", "subjects.csv", "README.md"):
        assert (tmp_path / name).read_bytes() == (sample / name).read_bytes()
    for f in responses(sample / "responses"):
        assert (tmp_path / "responses" / f.name).read_bytes() == f.read_bytes()
    for folder in (sample, tmp_path):  # each SIMULATED photo is the one its envelope names, byte for byte
        envelopes = sorted((folder / "responses").glob("*.meta.json"))
        assert len(envelopes) == 48  # every subject at D0 and W12
        for meta in envelopes:
            env = orjson.loads(meta.read_bytes())
            photo = (meta.parent / env["photo"]).resolve()
            assert env["simulated"] and hashlib.sha256(photo.read_bytes()).hexdigest() == env["photo_sha256"]

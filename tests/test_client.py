"""skintrack.Client against the emulator over real HTTP: each error class, retries and their limits."""
import time

import orjson
import pytest

import skintrack
from skintrack.api.client import Client, RetryPolicy, classify
from skintrack.api.request import Params, prepare_photo

from conftest import load

FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05, timeout=(2, 10))


def client(emu, key="test-key", retry=FAST):
    return Client(api_key=key, url=emu.url, retry=retry, seed=1)


def test_success_is_a_current_format_response_with_maps_and_marks(emulator, photos):
    emu = emulator()
    photo = prepare_photo(photos(1)[0])
    reply = client(emu).call(photo, Params(return_maps=("red_area", "water_area"), return_marks=(
        "wrinkle_mark", "melanin_mark", "forehead_wrinkle_list")))
    assert (reply.status, reply.attempts) == (200, 1)
    rows = skintrack.flatten(reply.document)
    assert rows["extras"] == [{"path": "simulated", "value": '"SIMULATED by skintrack.sample - not a real API response"'}]
    assert {m["name"] for m in rows["maps"]} == {"red_area", "water_area"}
    assert {o["kind"] for o in rows["outlines"]} >= {"wrinkle_outline", "melanin_mark"}
    again = client(emu).call(photo, Params(return_maps=("red_area", "water_area"), return_marks=(
        "wrinkle_mark", "melanin_mark", "forehead_wrinkle_list")))
    first, second = orjson.loads(reply.body), orjson.loads(again.body)
    assert first["request_id"] != second["request_id"]  # each answer its own request id, as the service's
    assert {**first, "request_id": ""} == {**second, "request_id": ""}  # the rest derived from the photo's bytes


@pytest.mark.parametrize("config, key, error, code", [
    ({}, "wrong-key", skintrack.AuthError, "ERROR_APPLICATIONS_NOT_EXISTS"),
    ({"codes": {"ERROR_INVALID_PARAMETER": 1.0}}, "test-key", skintrack.ParameterError, "ERROR_INVALID_PARAMETER"),
    ({"codes": {"ERROR_POOR_FACE_LIGHTING": 1.0}}, "test-key", skintrack.FaceQualityError, "ERROR_POOR_FACE_LIGHTING"),
    ({"codes": {"ERROR_NOT_ENOUGH_CREDITS": 1.0}}, "test-key", skintrack.RateLimited, "ERROR_NOT_ENOUGH_CREDITS"),
])
def test_final_errors_are_not_retried(emulator, photos, config, key, error, code):
    emu = emulator(**config)
    with pytest.raises(error) as info:
        client(emu, key).call(prepare_photo(photos(1)[0]))
    assert (info.value.code, info.value.retryable, emu.stats()["calls"]) == (code, False, 1)
    assert info.value.response["error_detail"]["code"] == code


def test_a_photo_without_a_face_is_a_documented_422(emulator, tmp_path):
    from PIL import Image

    Image.new("RGB", (600, 600), (128, 128, 128)).save(tmp_path / "blank.jpg")
    with pytest.raises(skintrack.FaceQualityError, match="ERROR_NO_FACE_IN_FILE") as info:
        client(emulator()).call(prepare_photo(tmp_path / "blank.jpg"))
    assert info.value.status == 422


@pytest.mark.parametrize("fault, error", [("share_503", skintrack.RateLimited), ("share_500", skintrack.ServerError),
                                          ("share_429", skintrack.RateLimited)])
def test_retryable_faults_are_retried_up_to_the_limit(emulator, photos, fault, error):
    emu = emulator(**{fault: 1.0})
    with pytest.raises(error) as info:
        client(emu).call(prepare_photo(photos(1)[0]))
    assert info.value.retryable and info.value.attempts == 4 and emu.stats()["calls"] == 4
    assert emu.stats()["billed"] == 0


def test_retry_after_is_honoured(emulator, photos):
    emu = emulator(share_429=1.0, retry_after=0.4)
    t0 = time.perf_counter()
    with pytest.raises(skintrack.RateLimited):
        client(emu, retry=RetryPolicy(attempts=3, base=0.001, cap=0.001)).call(prepare_photo(photos(1)[0]))
    assert time.perf_counter() - t0 >= 0.8  # two waits of Retry-After, not the 1 ms backoff


def test_a_retry_after_of_hours_ends_the_retries_and_says_so(emulator, photos):
    """A batch does not sleep for an hour unseen: the error is raised at once, with the wait asked for."""
    emu = emulator(share_429=1.0, retry_after=3600)
    t0 = time.perf_counter()
    with pytest.raises(skintrack.RateLimited, match=r"asks to wait 3600 s before trying again: not waited") as info:
        client(emu).call(prepare_photo(photos(1)[0]))
    assert time.perf_counter() - t0 < 5 and info.value.attempts == 1 and emu.stats()["billed"] == 0


@pytest.mark.parametrize("header", ["soon", "inf", "1e400", "nan", "Mon, 99 Foo 2020 00:00:00 GMT"])
def test_a_retry_after_that_says_nothing_usable_is_ignored(header):
    """A server's header is data: it neither stops the batch (a ValueError from the date parser) nor puts it to
    sleep for ever (an infinite number of seconds)."""
    from skintrack.api.client import _retry_after

    assert _retry_after(header) is None and _retry_after("7") == 7.0


def test_a_flaky_service_eventually_answers_each_photo_once(emulator, photos):
    emu = emulator(share_429=0.2, share_503=0.2, share_500=0.1, retry_after=0.01, seed=3)
    c = client(emu, retry=RetryPolicy(attempts=12, base=0.005, cap=0.02, timeout=(2, 10)))
    shas = set()
    for path in photos(8):
        photo = prepare_photo(path)
        assert c.call(photo).status == 200
        shas.add(photo.sha256)
    stats = emu.stats()
    assert stats["billed_by_photo"] == {s: 1 for s in shas} and stats["calls"] > 8


@pytest.mark.parametrize("name, status, kind", [
    ("errors/legacy-docs-422-no-face.json", 422, skintrack.FaceQualityError),
    ("errors/newest-docs-no-face.json", 422, skintrack.FaceQualityError),
    ("errors/current-docs-422-no-face.json", 200, skintrack.FaceQualityError),  # the code wins over the status
    ("community-2025-full.json", 200, type(None)),
])
def test_classification_of_the_real_envelopes(name, status, kind):
    assert isinstance(classify(status, load(f"real/{name}")), kind)


def test_old_envelope_without_detail_falls_back_to_error_code():
    err = classify(200, {"error_code": 429, "error_msg": "qps exceeded"})
    assert isinstance(err, skintrack.RateLimited) and "qps exceeded" in str(err)
    assert isinstance(classify(502, {"error_code_str": "AI_SERVICE_ERROR"}), skintrack.ServerError)


def test_the_key_is_never_shown(emulator, photos):
    secret = "sk-TOPSECRET-4242"
    c = Client(api_key=secret, url=emulator().url, retry=FAST)
    with pytest.raises(skintrack.AuthError) as info:
        c.call(prepare_photo(photos(1)[0]))
    shown = [repr(c), str(c), str(info.value), repr(info.value), str(info.value.response)]
    assert not any(secret in s for s in shown)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(c)


def test_no_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("AILABAPI_API_KEY", raising=False)
    with pytest.raises(skintrack.UsageError, match="AILABAPI_API_KEY"):
        Client()


def test_url_and_key_from_the_environment(monkeypatch, emulator, photos):
    emu = emulator()
    monkeypatch.setenv("AILABAPI_API_KEY", "test-key")
    monkeypatch.setenv("SKINTRACK_API_URL", emu.url)
    assert Client(retry=FAST).call(prepare_photo(photos(1)[0])).status == 200


def test_the_caller_can_pass_the_session(emulator, photos):
    import requests

    seen = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: seen.append(r.status_code))
    Client(api_key="test-key", url=emulator().url, session=session, retry=FAST).call(prepare_photo(photos(1)[0]))
    assert seen == [200]


def test_emulator_stats_over_http(emulator, photos):
    import requests

    emu = emulator()
    client(emu).call(prepare_photo(photos(1)[0]))
    stats = requests.get(emu.url.split("/api/")[0] + "/_emulator/stats", timeout=5).json()
    assert (stats["calls"], stats["billed"], stats["statuses"]) == (1, 1, {"200": 1})

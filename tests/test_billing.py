"""Money: a call the service may have billed is never sent again unasked. The emulator's billing ledger says
what the service would charge: a call is billed once its analysis has produced an answer, even when that
answer is then lost (a dropped connection, a body cut short, a client that stopped waiting)."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

import skintrack
from skintrack.api.client import Client, RetryPolicy
from skintrack.api.emulator import Emulator, EmulatorConfig
from skintrack.api.request import prepare_photo

FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05, timeout=(2, 10))


@pytest.mark.parametrize("fault", [{"share_drop": 1.0}, {"share_truncate": 1.0}, {"share_gateway": 1.0},
                                   {"share_hollow": 1.0}, {"latency": 1.5}])
def test_an_answer_lost_after_sending_is_billed_and_never_sent_again(emulator, photos, fault):
    emu = emulator(**fault)
    retry = RetryPolicy(attempts=4, base=0.01, cap=0.05, timeout=(2, 0.5))  # a read timeout shorter than 1.5 s
    with pytest.raises(skintrack.AnswerLost, match="may have been billed") as info:
        Client(api_key="test-key", url=emu.url, retry=retry).call(prepare_photo(photos(1)[0]))
    assert not info.value.retryable and info.value.attempts == 1
    time.sleep(1.6 if "latency" in fault else 0)  # the late analysis finishes (and is billed) all the same
    stats = emu.stats()
    assert stats["calls"] == 1 and stats["billed"] == 1
    assert [e["answer"] for e in stats["ledger"]] == [{"share_drop": "dropped", "share_truncate": "truncated",
                                                       "share_gateway": "gateway", "share_hollow": "hollow"}.get(
        next(iter(fault)), "sent")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_connection_refused_before_anything_was_sent_is_retried_until_the_service_listens(photos):
    port = _free_port()
    photo = prepare_photo(photos(1)[0])
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(skintrack.TransportError, match="nothing sent") as info:
        Client(api_key="test-key", url=url, retry=FAST).call(photo)
    assert info.value.retryable and info.value.attempts == 4
    started = []
    threading.Timer(0.4, lambda: started.append(Emulator(EmulatorConfig(api_key="test-key", latency=0),
                                                         port=port).start())).start()
    try:  # the service comes up while the client is still trying
        reply = Client(api_key="test-key", url=url, retry=RetryPolicy(attempts=8, base=0.2, cap=0.3)).call(photo)
        assert reply.status == 200 and reply.attempts > 1 and started[0].stats()["billed"] == 1
    finally:
        started[0].stop()


def test_a_callers_own_session_counts_an_unknown_failure_as_maybe_billed(emulator, photos):
    emu = emulator(share_drop=1.0)
    with pytest.raises(skintrack.AnswerLost):
        Client(api_key="test-key", url=emu.url, session=requests.Session(), retry=FAST).call(
            prepare_photo(photos(1)[0]))
    assert emu.stats()["calls"] == 1


def test_a_batch_with_lost_answers_pays_each_photo_once_and_resends_only_when_asked(photos, tmp_path, emulator,
                                                                                   run_cli):
    photos(24)
    emu = emulator(share_drop=0.08, share_truncate=0.07, seed=11)
    env = {"AILABAPI_API_KEY": "test-key", "SKINTRACK_API_URL": emu.base}
    args = ("analyze", tmp_path / "photos", "--study", tmp_path / "s", "--quiet", "--concurrency", "3", "--qps", "0")
    first = run_cli(*args, env=env)
    lost = [e for e in emu.stats()["ledger"] if e["answer"] != "sent"]
    assert lost, "the seed must lose some answers"
    stats = emu.stats()
    assert stats["billed"] == 24 and set(stats["billed_by_photo"].values()) == {1}  # never paid twice
    assert first.returncode == 1 and f"uncertain {len(lost)} (sent, answer lost: maybe billed)" in first.stdout
    assert first.stdout.count("uncertain: ") == len(lost)
    dry = run_cli(*args, "--dry-run", env=env)
    assert f"{len(lost)} held back (an earlier call may have been billed)" in dry.stdout
    assert dry.stdout.count("--resend-uncertain sends it again and MAY PAY TWICE") == len(lost)
    again = run_cli(*args, env=env)
    assert f"held back {len(lost)}" in again.stdout and "analyzed 0 of 0" in again.stdout
    assert emu.stats()["billed"] == 24
    emu.config.share_drop = emu.config.share_truncate = 0.0
    resent = run_cli(*args, "--resend-uncertain", env=env, check=0)
    assert f"analyzed {len(lost)} of {len(lost)} planned calls" in resent.stdout
    assert emu.stats()["billed"] == 24 + len(lost)  # asked for: the lost ones were paid twice, nothing else
    assert skintrack.open(tmp_path / "s").sql("select count(*) n from analyses where ok")["n"].tolist() == [24]
    assert run_cli(*args, env=env, check=0).stdout.count("held back 0") == 1

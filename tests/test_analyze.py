"""`skintrack analyze` end to end against the emulator: archive, skip, resume after SIGKILL, the key."""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

import skintrack
from skintrack.api.analyze import analyze
from skintrack.api.client import Client, RetryPolicy
from skintrack.api.request import Params

from conftest import FIXTURES

FAST = RetryPolicy(attempts=3, base=0.01, cap=0.05, timeout=(2, 10))


def bodies(study):
    return sorted(p for p in (study / "raw").glob("*.json") if not p.name.endswith(".meta.json"))


def test_real_photos_end_to_end(emulator, tmp_path, run_cli):
    emu = emulator()
    real = [FIXTURES / "real" / f"ailabtools-docs-case{i}" / "image.jpeg" for i in (1, 2)]
    (tmp_path / "m.csv").write_text(f"file,subject_id,visit\n{real[0]},S1,D0\n{real[1]},S1,W4\n")
    env = {"AILABAPI_API_KEY": "test-key", "SKINTRACK_API_URL": emu.url}
    proc = run_cli("analyze", *real, "--study", tmp_path / "s", "--manifest", tmp_path / "m.csv",
                   "--maps", "red_area,roi_outline_map", "--marks", "wrinkle_mark", "--quiet", env=env, check=0)
    assert "analyzed 2 of 2 planned calls" in proc.stdout and "ingested 2 new analyses" in proc.stdout
    s = skintrack.open(tmp_path / "s")
    got = s.sql("select subject_id, visit, ok, photo from analyses order by visit")
    assert got[["subject_id", "visit", "ok"]].values.tolist() == [["S1", "D0", True], ["S1", "W4", True]]
    assert s.sql("select count(*) n from maps")["n"].tolist() == [4]
    meta = orjson.loads(next((tmp_path / "s" / "raw").glob("image-*.meta.json")).read_bytes())
    assert meta["params"] == {"return_maps": "red_area,roi_outline_map", "return_marks": "wrinkle_mark"}
    assert meta["http_status"] == 200 and meta["photo_sha256"] and "api_key" not in str(meta).lower()
    again = run_cli("analyze", *real, "--study", tmp_path / "s", "--maps", "red_area,roi_outline_map", "--marks",
                    "wrinkle_mark", "--quiet", env={**env, "SKINTRACK_API_URL": "http://127.0.0.1:9/none"}, check=0)
    assert "skipped 2 already analysed" in again.stdout  # nothing left to do: no network needed
    assert emu.stats()["billed"] == 2


def test_dry_run_calls_nothing(photos, tmp_path, run_cli):
    photos(3)
    (tmp_path / "photos" / "notes.jpg").write_text("not a photo")
    proc = run_cli("analyze", tmp_path / "photos", "--study", tmp_path / "s", "--dry-run", check=1,
                   env={"SKINTRACK_API_URL": "http://127.0.0.1:9/none"})
    assert "3 calls would be made" in proc.stdout and "1 refused before paying" in proc.stdout
    assert not (tmp_path / "s" / "raw").exists()


def test_refused_photos_are_named_with_their_rule(photos, tmp_path, emulator):
    from skintrack.sample import sample_photo

    photos(2)
    sample_photo(tmp_path / "photos", "tiny.jpg", size=(150, 150))
    sample_photo(tmp_path / "photos", "scan.png", fmt="PNG")
    whole = sample_photo(tmp_path, "whole.jpg").read_bytes()
    (tmp_path / "photos" / "cut.jpg").write_bytes(whole[:len(whole) // 2])  # a copy that stopped half-way
    emu = emulator()
    c = Client(api_key="test-key", url=emu.url, retry=FAST)
    report = analyze([tmp_path / "photos"], tmp_path / "s", client=c, qps=None)
    reasons = {Path(p).name: r for p, r in report.invalid}
    assert set(reasons) == {"tiny.jpg", "scan.png", "cut.jpg"} and "more than 200x200" in reasons["tiny.jpg"]
    assert "damaged or cut short" in reasons["cut.jpg"]
    assert report.succeeded == 2 and not report.ok and emu.stats()["calls"] == 2  # nothing paid for the three
    fixed = analyze([tmp_path / "photos" / "scan.png"], tmp_path / "s", client=c, fix=True, qps=None)
    assert fixed.succeeded == 1
    meta = orjson.loads(next((tmp_path / "s" / "raw").glob("scan-*.meta.json")).read_bytes())
    assert meta["fixes"] == ["converted PNG to JPEG"]


def test_documented_failures_are_archived_ingested_and_retried_on_request(tmp_path, emulator):
    from PIL import Image

    (tmp_path / "p").mkdir()
    Image.new("RGB", (500, 500), (120, 120, 120)).save(tmp_path / "p" / "blank.jpg")
    emu = emulator()
    c = Client(api_key="test-key", url=emu.url, retry=FAST)
    first = analyze([tmp_path / "p"], tmp_path / "s", client=c, qps=None)
    assert len(first.failed) == 1 and "ERROR_NO_FACE_IN_FILE" in first.failed[0][1]
    assert [p.name.endswith(".failed.json") for p in bodies(tmp_path / "s")] == [True]
    row = skintrack.open(tmp_path / "s").sql("select ok, error_status, photo from analyses").iloc[0]
    assert (row.ok, row.error_status) == (False, "ERROR_NO_FACE_IN_FILE")
    assert analyze([tmp_path / "p"], tmp_path / "s", client=c, qps=None).planned == 0
    assert analyze([tmp_path / "p"], tmp_path / "s", client=c, qps=None, retry_failed=True).planned == 1
    assert emu.stats()["calls"] == 2


def test_an_answer_that_holds_no_analysis_is_held_back_as_uncertain_with_what_arrived(photos, tmp_path, emulator):
    """A 200 whose JSON has no result is no analysis: it was neither archived as the photo's answer (which would
    have marked the photo done for good) nor sent again; its record keeps what arrived."""
    emu = emulator(share_hollow=1.0)
    c = Client(api_key="test-key", url=emu.url, retry=FAST)
    photo = photos(1)
    report = analyze(photo, tmp_path / "s", client=c, qps=None)
    assert report.succeeded == 0 and len(report.uncertain) == 1 and emu.stats()["calls"] == 1
    record = orjson.loads(next((tmp_path / "s" / "raw" / ".uncertain").glob("*.json")).read_bytes())
    assert record["received"] == '{"status": "ok"}' and "no result object" in record["error"]
    again = analyze(photo, tmp_path / "s", client=c, qps=None)
    assert len(again.held) == 1 and emu.stats()["calls"] == 1  # held back, not paid again


def test_qps_limit(photos, tmp_path, emulator):
    photos(25)
    c = Client(api_key="test-key", url=emulator().url, retry=FAST)
    t0 = time.perf_counter()
    report = analyze([tmp_path / "photos"], tmp_path / "s", client=c, concurrency=8, qps=10, run_ingest=False)
    elapsed = time.perf_counter() - t0
    assert report.succeeded == 25 and 1.5 <= elapsed < 4  # a burst of 10, then 15 more at 10 per second


def test_side_results_round_trip(photos, tmp_path, emulator):
    front, left, right = photos(3)
    manifest = tmp_path / "photos" / "m.csv"
    manifest.write_text(f"file,left_side_file,right_side_file,subject_id\n{front.name},{left.name},{right.name},S9\n")
    c = Client(api_key="test-key", url=emulator().url, retry=FAST)
    report = analyze([front], tmp_path / "s", manifest=manifest, client=c, qps=None,
                     params=Params(return_side_results=("jawline_info",), return_maps=("left_roi_outline_map",)))
    assert report.succeeded == 1, report
    s = skintrack.open(tmp_path / "s")
    assert s.sql("select side, jawline_quality from side_results order by side").values.tolist() == [["left", 1],
                                                                                                   ["right", 1]]
    assert s.sql("select subject_id from analyses")["subject_id"].tolist() == ["S9"]
    assert s.sql("select name from maps")["name"].tolist() == ["left_roi_outline_map"]
    missing = analyze([left], tmp_path / "s2", manifest=manifest, client=c, qps=None,
                      params=Params(return_side_results=("jawline_info",)))
    assert "needs left_side_file and right_side_file" in missing.invalid[0][1]


def test_sigkill_mid_batch_loses_no_photo_and_bills_none_twice(photos, tmp_path, emulator):
    photos(24)
    emu = emulator(latency=0.25)
    study = tmp_path / "s"
    exe = Path(sys.executable).with_name("skintrack")
    cmd = [str(exe), "analyze", str(tmp_path / "photos"), "--study", str(study), "--concurrency", "4", "--qps", "0",
           "--quiet"]
    env = {**os.environ, "AILABAPI_API_KEY": "test-key", "SKINTRACK_API_URL": emu.url}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not (study / "raw").exists() or len(bodies(study)) < 8):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name.split(".")[-3] for p in bodies(study)}
    assert 8 <= len(before) < 24
    in_flight = {p.name.split(".")[-3] for p in (study / "raw" / ".inflight").glob("*/*.json")} - before
    assert 1 <= len(in_flight) <= 4  # the calls the killed run had sent (or was sending) when it died

    again = subprocess.run(cmd[:-1], env=env, capture_output=True, text=True)
    assert again.returncode == 1  # not all done: the calls in flight are held back, not paid for again unasked
    held = [line for line in again.stdout.splitlines() if line.startswith("held back:")]
    assert len(held) == len(in_flight) and all("an earlier run ended with this call in flight" in h and
                                               "--resend-uncertain" in h for h in held), again.stdout
    billed = {sha[:12]: n for sha, n in emu.stats()["billed_by_photo"].items()}
    assert max(billed.values()) == 1  # no photo paid for twice
    assert {p.name.split(".")[-3] for p in bodies(study)} == set(billed) - in_flight
    assert len(bodies(study)) + len(in_flight) == 24

    assert subprocess.run([*cmd, "--resend-uncertain"], env=env).returncode == 0  # asked: those are sent again
    archived = [p.name.split(".")[-3] for p in bodies(study)]
    assert len(set(archived)) == len(archived) == 24  # every photo archived, each once
    billed = {sha[:12]: n for sha, n in emu.stats()["billed_by_photo"].items()}
    assert {s for s, n in billed.items() if n > 1} <= in_flight  # paid twice only where the user said so
    assert not list((study / "raw" / ".inflight").glob("*/*"))  # every record settled
    assert skintrack.open(study).sql("select count(*) n from analyses where ok")["n"].tolist() == [24]


def test_the_key_is_written_nowhere(photos, tmp_path, emulator, run_cli):
    secret = "sk-TOPSECRET-31337"
    photos(3)
    emu = emulator(api_key=secret, codes={"ERROR_NO_FACE_IN_FILE": 0.3}, seed=5)
    env = {"AILABAPI_API_KEY": secret, "SKINTRACK_API_URL": emu.url}
    ok = run_cli("analyze", tmp_path / "photos", "--study", tmp_path / "s", env=env)
    wrong = run_cli("analyze", tmp_path / "photos", "--study", tmp_path / "s2",
                    env={**env, "AILABAPI_API_KEY": secret + "-old"})
    assert wrong.returncode == 1 and "ERROR_APPLICATIONS_NOT_EXISTS" in wrong.stdout
    for out in (ok.stdout, ok.stderr, wrong.stdout, wrong.stderr):
        assert secret not in out
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    for p in files:
        assert secret.encode() not in p.read_bytes(), p


def test_ctrl_c_finishes_the_calls_in_flight_and_says_so(photos, tmp_path, emulator):
    photos(16)
    emu = emulator(latency=0.4)
    env = {**os.environ, "AILABAPI_API_KEY": "test-key", "SKINTRACK_API_URL": emu.url}
    exe = Path(sys.executable).with_name("skintrack")
    proc = subprocess.Popen([str(exe), "analyze", str(tmp_path / "photos"), "--study", str(tmp_path / "s"),
                             "--concurrency", "2", "--qps", "0", "--quiet"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # a suite started in the background inherits SIGINT ignored; a user's terminal does not
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(bodies(tmp_path / "s") if (tmp_path / "s" / "raw").exists() else []) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    archived = len(bodies(tmp_path / "s"))
    assert proc.returncode == 1 and "INTERRUPTED: run again to finish" in out and "Traceback" not in err
    assert f"analyzed {archived} of 16 planned calls" in out and 2 <= archived < 16
    assert emu.stats()["billed"] == archived  # every call that was paid for is in the archive


def test_two_runs_at_once_never_pay_twice_and_same_bytes_are_one_call(photos, tmp_path, emulator, run_cli):
    made = photos(12)
    shutil.copy(made[0], tmp_path / "photos" / "copy-of-p00.jpg")  # the same bytes under another name
    emu = emulator(latency=1.0)  # the first run lasts ~6 s: the second surely meets it
    study = tmp_path / "s"
    env = {**os.environ, "AILABAPI_API_KEY": "test-key", "SKINTRACK_API_URL": emu.url}
    exe = Path(sys.executable).with_name("skintrack")
    cmd = [str(exe), "analyze", str(tmp_path / "photos"), "--study", str(study), "--qps", "0", "--quiet",
           "--concurrency", "2"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not emu.stats()["calls"] and time.monotonic() < deadline:
        time.sleep(0.01)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    out, _ = first.communicate(timeout=120)
    assert second.returncode == 2 and "another `skintrack analyze` is running on this study" in second.stderr
    copy = tmp_path / "photos" / "copy-of-p00.jpg"
    assert first.returncode == 0 and f"same photo: {made[0]} has the bytes of {copy}: one call for both" in out
    assert emu.stats()["billed"] == 12 and set(emu.stats()["billed_by_photo"].values()) == {1}
    third = run_cli("analyze", tmp_path / "photos", "--study", study, "--quiet", env=env, check=0)
    assert "skipped 13 already analysed" in third.stdout and emu.stats()["billed"] == 12


@pytest.mark.parametrize("trouble", ["wrong key", "no credits", "service down"])
def test_account_and_service_errors_stop_the_batch_and_the_next_run_retries(trouble, photos, tmp_path, emulator,
                                                                            run_cli):
    photos(24)
    good = emulator()
    bad = {"wrong key": good, "no credits": emulator(codes={"ERROR_NOT_ENOUGH_CREDITS": 1.0}),
           "service down": emulator(share_500=1.0)}[trouble]
    key = "wrong-key" if trouble == "wrong key" else "test-key"
    args = ("analyze", tmp_path / "photos", "--study", tmp_path / "s", "--quiet", "--concurrency", "2", "--qps", "0")
    first = run_cli(*args, env={"AILABAPI_API_KEY": key, "SKINTRACK_API_URL": bad.url})
    assert first.returncode == 1 and "STOPPED at the first error that is not about a photo" in first.stdout
    assert len([line for line in first.stdout.splitlines() if "STOPPED" in line]) == 1
    assert {"wrong key": "AuthError", "no credits": "ERROR_NOT_ENOUGH_CREDITS", "service down": "ServerError"}[
        trouble] in first.stdout
    assert bad.stats()["billed"] == 0 and not list((tmp_path / "s" / "raw").glob("*.json"))
    again = run_cli(*args, env={"AILABAPI_API_KEY": "test-key", "SKINTRACK_API_URL": good.url}, check=0)
    assert "analyzed 24 of 24 planned calls" in again.stdout
    assert skintrack.open(tmp_path / "s").sql("select count(*) n from analyses where ok")["n"].tolist() == [24]


def test_account_failures_archived_by_older_versions_are_retried_and_never_ingested(photos, tmp_path, emulator):
    (photo,) = photos(1)
    c = Client(api_key="test-key", url=emulator().url, retry=FAST)
    raw = tmp_path / "s" / "raw"
    raw.mkdir(parents=True)
    sha = __import__("hashlib").sha256(photo.read_bytes()).hexdigest()
    body = {"error_code": 429, "error_detail": {"status_code": 429, "code": "ERROR_NOT_ENOUGH_CREDITS",
                                                "code_message": "Insufficient credits.", "message": ""}}
    (raw / f"p00.{sha[:12]}.{Params().key()}.failed.json").write_bytes(orjson.dumps(body))
    report = analyze([photo], tmp_path / "s", client=c, qps=None)
    assert (report.planned, report.succeeded) == (1, 1)
    assert [r for _, r in report.ingested.rejected] == [
        "the API refused the call for the account, key, request or service (ERROR_NOT_ENOUGH_CREDITS), not for the "
        "photo: no analysis to ingest; run analyze again once that is fixed"]
    assert skintrack.open(tmp_path / "s").sql("select ok from analyses")["ok"].tolist() == [True]


@pytest.mark.parametrize("echo", ["plain", "json-slash", "percent", "base64", "unicode"])
def test_a_key_echoed_by_the_server_is_redacted_everywhere(echo, photos, tmp_path, emulator, run_cli):
    import base64
    import pickle
    import urllib.parse

    secret = "sk-ECHOED/4242+x="
    photos(2)
    emu = emulator(api_key="the-right-one", echo_key=echo)
    proc = run_cli("analyze", tmp_path / "photos", "--study", tmp_path / "s",
                   env={"AILABAPI_API_KEY": secret, "SKINTRACK_API_URL": emu.url})
    assert proc.returncode == 1 and "<redacted key>" in proc.stdout
    forms = [secret, secret.replace("/", "\\/"), urllib.parse.quote(secret, safe=""),
             base64.b64encode(f"{secret}:".encode()).decode(), "\\u0073\\u006b"]
    for form in forms:
        assert form not in proc.stdout + proc.stderr
        assert all(form.encode() not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()), form
    c = Client(api_key=secret, url=emu.url, retry=FAST)
    with pytest.raises(skintrack.AuthError) as caught:
        c.call(__import__("skintrack.api.request", fromlist=["x"]).prepare_photo(tmp_path / "photos" / "p00.jpg"))
    assert all(f not in str(caught.value) and f.encode() not in caught.value.body for f in forms)
    held = repr(vars(c)) + repr([getattr(c, a) for a in dir(c) if not a.startswith("__")])
    assert secret not in held and secret.encode() not in pickle.dumps(vars(c)["_key"]._masked)
    with pytest.raises(TypeError):
        pickle.dumps(c)


@pytest.mark.parametrize("key, said", [("sk-abc\rdef", "a carriage return at character 7 of 10"),
                                       ("sk-a\nbcdef", "a line break at character 5 of 10"),
                                       ("sk-ab cdef", "a space at character 6 of 10"),
                                       ("sk-abcdéf", "the character U+00E9 at character 8 of 9")])
def test_a_key_that_cannot_go_in_a_header_is_refused_without_showing_it(key, said, photos, tmp_path, run_cli):
    photos(1)
    proc = run_cli("analyze", tmp_path / "photos", "--study", tmp_path / "s",
                   env={"AILABAPI_API_KEY": key, "SKINTRACK_API_URL": "http://127.0.0.1:9/x"})
    assert proc.returncode == 2 and said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    for part in ("abc", "def", "bcdef", "cdef"):
        assert part not in proc.stdout + proc.stderr


def test_the_key_comes_from_a_file_or_the_environment_never_from_argv(photos, tmp_path, emulator, run_cli):
    secret = "sk-FROMFILE-777"
    photos(6)
    emu = emulator(api_key=secret, latency=0.5)
    (tmp_path / "key").write_text(secret + "\n")  # a file's last newline is no part of the key
    refused = run_cli("analyze", tmp_path / "photos", "--study", tmp_path / "s", "--api-key", secret)
    assert refused.returncode == 2 and "No such option '--api-key'" in refused.stderr and secret not in refused.stderr
    exe = Path(sys.executable).with_name("skintrack")
    env = {k: v for k, v in os.environ.items() if k != "AILABAPI_API_KEY"}
    proc = subprocess.Popen([str(exe), "analyze", str(tmp_path / "photos"), "--study", str(tmp_path / "s"),
                             "--api-key-file", str(tmp_path / "key"), "--quiet", "--concurrency", "1", "--qps", "0"],
                            env={**env, "SKINTRACK_API_URL": emu.base}, stdout=subprocess.PIPE, text=True)
    seen = []
    while proc.poll() is None:  # what `ps` shows of the running batch
        with contextlib.suppress(OSError):
            seen.append(Path(f"/proc/{proc.pid}/cmdline").read_bytes())
        time.sleep(0.1)
    out, _ = proc.communicate()
    assert proc.returncode == 0 and "analyzed 6 of 6" in out and seen
    assert not any(secret.encode() in s for s in seen)
    none = run_cli("analyze", tmp_path / "photos", "--study", tmp_path / "s2", env={"AILABAPI_API_KEY": ""})
    assert none.returncode == 2 and "no API key: set AILABAPI_API_KEY, or give --api-key-file FILE" in none.stderr


@pytest.mark.parametrize("url", ["htp:/nowhere", "127.0.0.1:8765/x", "http://", "http://host:99999/x"])
def test_a_malformed_api_url_is_one_line(url, photos, tmp_path, run_cli):
    photos(1)
    proc = run_cli("analyze", tmp_path / "photos", "--study", tmp_path / "s",
                   env={"AILABAPI_API_KEY": "test-key", "SKINTRACK_API_URL": url})
    assert proc.returncode == 2 and proc.stderr.startswith(f"Error: the API address {url!r} (url, --url or SKINTRACK_API_URL)")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_an_unwritable_study_is_one_line_for_analyze(photos, tmp_path, run_cli):
    from test_guardrails import tmpfs

    photos(1)
    with tmpfs(tmp_path / "ro", "1m", ",ro") as ro:
        proc = run_cli("analyze", tmp_path / "photos", "--study", ro / "s",
                       env={"AILABAPI_API_KEY": "test-key", "SKINTRACK_API_URL": "http://127.0.0.1:9/x"})
    assert proc.returncode == 2 and "cannot write to this study folder (Read-only file system)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_dry_run_lists_the_refused_photos_and_refused_rows_are_not_missing(photos, tmp_path, emulator, run_cli):
    from skintrack.sample import sample_photo

    photos(2)
    sample_photo(tmp_path / "photos", "tiny.jpg", size=(150, 150))
    (tmp_path / "m.csv").write_text("file,subject_id,visit\np00.jpg,S1,D0\np01.jpg,S1,W4\ntiny.jpg,S2,D0\n")
    dry = run_cli("analyze", tmp_path / "photos", "--study", tmp_path / "s", "--manifest", tmp_path / "m.csv",
                  "--dry-run", check=1)
    assert "2 calls would be made" in dry.stdout
    assert f"refused: {tmp_path / 'photos' / 'tiny.jpg'}: 150x150 px; the API needs more than 200x200 px" in dry.stdout
    c = Client(api_key="test-key", url=emulator().url, retry=FAST)
    report = analyze([tmp_path / "photos"], tmp_path / "s", manifest=tmp_path / "m.csv", client=c, qps=None)
    assert report.succeeded == 2 and report.ingested.rejected == []


def test_a_manifest_with_rows_it_cannot_use_sends_nothing(photos, tmp_path, emulator, run_cli):
    """A manifest row says whose visit a paid answer is: a row that cannot be used (here one cell too many,
    and a file listed twice) is fixed before any photo is paid for, dry run or not."""
    photos(3)
    emu = emulator()
    (tmp_path / "m.csv").write_text("file,subject_id,visit\np00.jpg,S1,D0\np01.jpg,S1,W4,extra\n"
                                    "p02.jpg,S2,D0\np02.jpg,S3,D0\n")
    env = {"AILABAPI_API_KEY": "test-key", "SKINTRACK_API_URL": emu.url}
    for dry in ((), ("--dry-run",)):
        proc = run_cli("analyze", tmp_path / "photos", "--study", tmp_path / "s", "--manifest", tmp_path / "m.csv",
                       "--quiet", *dry, env=env)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
        assert proc.stderr.startswith(f"Error: 3 row(s) of the manifest cannot be used, so no photo was sent: "
                                      f"{tmp_path / 'm.csv'}:3: 4 cells where the header has 3 columns"), proc.stderr
        assert f"{tmp_path / 'm.csv'}:4: `file` p02.jpg is listed more than once (lines 4, 5)" in proc.stderr
    assert emu.stats()["billed"] == 0 and not (tmp_path / "s" / "raw").exists()
    (tmp_path / "m.csv").write_text("file,subject_id,visit\np00.jpg,S1,D0\np01.jpg,S1,W4\np02.jpg,S2,D0\n")
    fixed = run_cli("analyze", tmp_path / "photos", "--study", tmp_path / "s", "--manifest", tmp_path / "m.csv",
                    "--quiet", env=env, check=0)
    assert "analyzed 3 of 3 planned calls" in fixed.stdout and emu.stats()["billed"] == 3


def test_a_dead_runs_calls_are_held_back_until_an_answer_settles_them(tmp_path):
    from skintrack.api.archive import Archive, envelope
    from skintrack.api.request import prepare_photo
    from skintrack.sample import sample_photo

    study, params = tmp_path / "s", Params()
    a, b = (prepare_photo(sample_photo(tmp_path / "photos", f"{n}.jpg", seed=i)) for i, n in enumerate("ab"))
    dead = Archive(study)  # a run that recorded two calls, archived the answer of one, then died
    for photo in (a, b):
        dead.in_flight(photo, params.key(), envelope(photo, params))
    dead.write(a, params.key(), b"{}", envelope(a, params), ok=True)
    half = dead._run / ".c.0123456789ab.abcd1234.json.1.2.tmp"  # killed while writing a third record
    half.write_bytes(b"{")
    records = sorted((study / "raw" / ".inflight").rglob("*"))

    Archive(study)  # without the analyze claim (a dry run): another run may be live, nothing is touched
    assert sorted((study / "raw" / ".inflight").rglob("*")) == records
    later = Archive(study, claimed=True)
    assert later.done(a.sha256, params.key()) and later.uncertain(a.sha256, params.key()) is None
    assert later.uncertain(b.sha256, params.key())["lost"] == "in flight"
    assert [p.name.split(".")[-3] for p in (study / "raw" / ".inflight").glob("*/*.json")] == [b.sha256[:12]]
    dry = analyze([tmp_path / "photos"], study, dry_run=True)
    assert (dry.planned, dry.skipped, [Path(p) for p, _ in dry.held]) == (0, 1, [Path(b.path)])
    assert "an earlier run ended with this call in flight" in dry.held[0][1]
    assert analyze([tmp_path / "photos"], study, dry_run=True, resend_uncertain=True).planned == 1

    later.write(b, params.key(), b"{}", envelope(b, params), ok=True)  # its answer came: the record is settled
    assert not (study / "raw" / ".inflight").exists() or not list((study / "raw" / ".inflight").iterdir())


"""Guardrails: odd files, paths and names, full disks, killed workers and user mistakes, each rejected or
refused one at a time with a reason, never a traceback, a hang, a lost study or a glob of someone's path."""
import contextlib
import csv
import fcntl
import gzip
import math
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest

import skintrack
from skintrack import UsageError
from skintrack.demo import demo_study

from conftest import FIXTURES, load, responses

CASE1 = FIXTURES / "real" / "ailabtools-docs-case1" / "response-v1.7.json"


@contextlib.contextmanager
def tmpfs(path: Path, size: str, options: str = ""):
    """A small file system of its own (root only, as the tests run in CI): full disks and read-only folders."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_odd_files_are_skipped_or_rejected_one_at_a_time(tmp_path, run_cli):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(FIXTURES / "real" / "community-2025-full.json", src / "good.json")
    shutil.copy(FIXTURES / "real" / "community-2023-full.json", src / "with-meta.json")
    (src / "with-meta.meta.json").write_text("{not json")
    os.symlink(src / "nowhere.json", src / "dangling.json")
    os.mkfifo(src / "x.json")  # reading it would hang forever
    os.symlink("/dev/zero", src / "zero.json")
    (src / "sub").mkdir()
    os.symlink(src, src / "sub" / "loop")  # a link back up: a walk that follows it never ends
    os.symlink(src / "good.json", src / "sub" / "same-file.json")  # one file under two names: one source
    (src / os.fsdecode(b"caf\xe9.json")).write_bytes(b"{}")
    with gzip.open(src / "bomb.json.gz", "wb") as gz:  # 300 MiB of zeros in about 300 KiB
        block = b"\0" * 2**20
        for _ in range(300):
            gz.write(block)
    proc = run_cli("ingest", src, "--study", tmp_path / "s", "--quiet", timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    s = skintrack.open(tmp_path / "s")
    reasons = dict(s.sql("select source, reason from rejects").values.tolist())
    named = {Path(k).name: v for k, v in reasons.items()}
    assert "leads nowhere" in named["dangling.json"]
    assert "not a regular file" in named["x.json"] and "not a regular file" in named["zero.json"]
    assert "not valid UTF-8" in named["caf\\xe9.json"]
    assert "larger than 256 MiB once decompressed" in named["bomb.json.gz"]
    assert "archive envelope is not readable JSON" in named["with-meta.meta.json"]
    assert s.sql("select count(*) n from analyses")["n"].tolist() == [2]
    assert s.sql("select count(*) n from sources")["n"].tolist() == [2]  # the loop and the second name add none


def test_paths_are_taken_literally_never_as_globs(tmp_path):
    for name, fixture in (("in1", "community-2023-full.json"), ("in[1]", "community-2025-full.json")):
        (tmp_path / name).mkdir()
        shutil.copy(FIXTURES / "real" / fixture, tmp_path / name / "r.json")
    skintrack.ingest([tmp_path / "in[1]"], tmp_path / "trial[1]")
    skintrack.ingest([tmp_path / "in1"], tmp_path / "trial1")
    ids = {name: skintrack.open(tmp_path / name).sql("select request_id from analyses")["request_id"].tolist()
           for name in ("trial[1]", "trial1")}
    assert ids["trial[1]"] == [load("real/community-2025-full.json")["request_id"]]
    assert ids["trial1"] == [load("real/community-2023-full.json")["request_id"]]
    assert skintrack.ingest([tmp_path / "in?"], tmp_path / "t3").added == 1  # a path that does not exist is a glob


def test_a_full_disk_is_one_line_and_a_rerun_finishes(tmp_path, run_cli):
    src = tmp_path / "in"
    src.mkdir()
    data = CASE1.read_bytes()
    for i in range(4):  # four analyses with ten maps each: about 5 MB once stored
        (src / f"r{i}.json").write_bytes(data + b" " * i)
    with tmpfs(tmp_path / "small", "2m") as disk:
        study = disk / "s"
        proc = run_cli("ingest", src, "--study", study, "--quiet", "--batch-size", "1")
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert proc.stderr.startswith("Error: the disk is full") and len(proc.stderr.strip().splitlines()) == 1
        held = skintrack.open(study).sql("select analysis_id, count(*) n from maps group by 1")
        assert (held["n"] == 10).all() and len(held) < 4  # whole analyses only
        assert all((study / p).exists() for p in skintrack.open(study).sql("select path from maps")["path"])
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = run_cli("ingest", src, "--study", study, "--quiet")
        assert again.returncode == 0, again.stderr
        assert skintrack.open(study).sql("select count(*) n from analyses")["n"].tolist() == [4]
        left = [p for p in study.rglob("*") if p.name.endswith(".tmp") or ".staging" in p.parts and p.is_file()]
        assert left == []


def test_an_unwritable_study_is_one_line(tmp_path, run_cli, sample):
    with tmpfs(tmp_path / "ro", "1m", ",ro") as ro:
        proc = run_cli("ingest", sample / "responses", "--study", ro / "s", "--quiet")
    assert proc.returncode == 2 and "cannot write to this study folder (Read-only file system)" in proc.stderr
    assert "Traceback" not in proc.stderr


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def test_killing_ingest_leaves_no_worker_and_no_lock(tmp_path, sample, run_cli):
    src = tmp_path / "in"
    src.mkdir()
    for copy in range(8):  # 768 distinct responses: a few seconds of work for two workers
        for f in responses(sample / "responses"):
            (src / f"{copy}-{f.name}").write_bytes(f.read_bytes() + b" " * copy)
    exe = Path(sys.executable).with_name("skintrack")
    proc = subprocess.Popen([str(exe), "ingest", str(src), "--study", str(tmp_path / "s"), "--workers", "2",
                             "--quiet", "--batch-size", "10"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) >= 2
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [Path(f"/proc/{w}/cmdline").read_text() for w in workers if _alive(w)]
    again = run_cli("ingest", src, "--study", tmp_path / "s", "--quiet", timeout=300)
    assert again.returncode == 0, again.stderr
    assert skintrack.open(tmp_path / "s").sql("select count(*) n from analyses")["n"].tolist() == [768]


CRAFTED = 'x" , (SELECT content FROM read_text(\'/etc/hostname\')) AS "leak'


def test_sql_in_every_user_supplied_string_and_name(tmp_path, sample):
    with open(sample / "subjects.csv") as fh:
        rows = list(csv.reader(fh))
    with open(tmp_path / "subjects.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0] + [CRAFTED]] + [r + ["a"] for r in rows[1:]])
    with open(sample / "manifest.csv") as fh:
        rows = list(csv.reader(fh))
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0] + ['op"er']] + [r + ["o'p"] for r in rows[1:]])
    skintrack.ingest([sample / "responses"], tmp_path / "s", manifest=tmp_path / "m.csv",
                     subjects=tmp_path / "subjects.csv")
    s = skintrack.open(tmp_path / "s")
    assert CRAFTED in s.columns("subjects")
    by_crafted = s.cohort("score.water", by=["visit", CRAFTED])
    assert by_crafted[CRAFTED].unique().tolist() == ["a"] and "leak" not in by_crafted.columns
    assert s.cohort("score.water", by=["visit", 'op"er'])['op"er'].unique().tolist() == ["o'p"]
    with pytest.raises(UsageError, match="cannot group by"):
        s.cohort("score.water", by=["visit", "arm; DROP VIEW scores"])
    with pytest.raises(skintrack.UnknownMetric):
        s.timeline("score.water' OR 1=1 --")
    with pytest.raises(UsageError, match="no visit \"W12' OR '1'='1\""):
        s.compare_arms("score.water", "W12' OR '1'='1")
    with pytest.raises(UsageError, match="no arm named"):
        s.compare_arms("score.water", "W12", treatment="active' --", control="placebo")
    assert s.sql("select count(*) n from scores")["n"].tolist() == [96 * 18]  # 18 scores per response: nothing dropped


def test_visit_test_and_study_mistakes_are_one_line(tmp_path, sample, run_cli):
    study = tmp_path / "s"
    skintrack.ingest([sample / "responses"], study, manifest=sample / "manifest.csv", subjects=sample / "subjects.csv")
    for args, message in [
        (("compare", study, "score.water", "--baseline", "D0", "--followup", "Wk8"),
         "no follow-up visit 'Wk8' in this study (visits: D0, W4, W8, W12)"),
        (("compare", study, "score.water", "--arms", "W13"), "no visit 'W13' in this study (visits: D0, W4, W8, W12)"),
        (("compare", study, "score.water", "--arms", "D0"),
         "D0 is the baseline visit: a change from baseline is compared at a later visit (W4, W8, W12)"),
        (("compare", study, "score.water", "--baseline", "W4", "--followup", "W4"),
         "the baseline and the follow-up are the same visit (W4): compare two visits"),
        (("compare", study, "score.water", "--baseline", "D0", "--followup", "W12", "--test", "ancova"),
         "test 'ancova' does not fit this comparison: use paired_t, wilcoxon"),
        (("compare", study, "score.water", "--arms", "W12", "--test", "wilcoxon"),
         "test 'wilcoxon' does not fit this comparison: use welch, mannwhitney, ancova"),
        (("trends", study, "score.water", "--view", "change", "--baseline", "W2"), "no baseline visit 'W2'"),
        (("qc", tmp_path / "nowhere"), "nowhere: no such study folder (`skintrack ingest FILES --study"),
    ]:
        proc = run_cli(*args)
        assert proc.returncode == 2 and proc.stderr.strip() == f"Error: {proc.stderr.strip()[7:]}", args
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
        assert "skintrack.open(" not in proc.stderr and "create=True" not in proc.stderr  # the CLI speaks CLI
    with pytest.raises(UsageError, match="no such study folder"):
        skintrack.open(tmp_path / "missing")
    assert skintrack.open(tmp_path / "created", create=True).path.is_dir()


def test_json_keeps_every_digit_and_an_empty_table_is_one_sentence(tmp_path, sample, run_cli):
    import json

    study = tmp_path / "s"
    skintrack.ingest([sample / "responses"], study, manifest=sample / "manifest.csv", subjects=sample / "subjects.csv")
    fit = skintrack.open(study).mmrm("score.water")
    printed = json.loads(run_cli("trends", study, "score.water", "--view", "mmrm", "--json", check=0).stdout)
    ps = [r["p"] for r in printed if r["kind"] == "difference"]
    assert ps == fit.diffs["p"].tolist() and min(ps) < 1e-6  # not rounded to 10 decimals
    none = run_cli("trends", study, "count.mole.left", "--view", "timeline", check=0)  # no side photos in the sample
    assert none.stdout.startswith("nothing to show: no rows") and "Empty DataFrame" not in none.stdout


def on_a_terminal(*args, columns: int, env: dict | None = None) -> str:
    """Run the console script with its output a real terminal (a pseudo-terminal `columns` wide, no $COLUMNS
    unless `env` gives it); returns what the terminal showed."""
    main, sub = pty.openpty()
    fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    plain = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # pytest-xdist's workers export COLUMNS=80
    with subprocess.Popen([Path(sys.executable).with_name("skintrack"), *map(str, args)], stdin=subprocess.DEVNULL,
                          stdout=sub, stderr=subprocess.DEVNULL, env={**plain, **(env or {})}) as proc:
        os.close(sub)
        shown = []
        with contextlib.suppress(OSError):  # EIO once the command has closed the terminal
            while chunk := os.read(main, 1 << 16):
                shown.append(chunk)
    os.close(main)
    assert proc.returncode == 0, (args, b"".join(shown))
    return b"".join(shown).decode().replace("\r\n", "\n")


def test_text_fits_the_terminal_and_a_pipe_gets_whole_lines(tmp_path, run_cli):
    study = demo_study().path
    kept = {"SKINTRACK_CACHE": str(tmp_path / "kept")}  # as a user has it: a kept answer is as wide as asked
    for args in [("metrics",), ("endpoints", study), ("mmrm", study, "score.water"), ("sensitivity", study,
                 "--imputations", "5"), ("claims", study), ("qc", study), ("history", study), ("plan", study),
                 ("trends", study, "score.water", "--view", "change"), ("compare", study, "score.water", "--arms", "W12")]:
        narrow = on_a_terminal(*args, columns=100, env=kept).splitlines()
        assert narrow and max(map(len, narrow)) <= 100, (args, max(narrow, key=len))
        whole = run_cli(*args, env={"COLUMNS": "60", **kept}, check=0).stdout.splitlines()  # $COLUMNS: no terminal
        assert whole == run_cli(*args, check=0).stdout.splitlines(), args  # not the narrow text kept before it
        assert whole == narrow or len(whole) < len(narrow) and max(map(len, whole)) > 100, args  # a pipe: none folded
    listed = run_cli("metrics", check=0).stdout.splitlines()
    assert len(listed) == len(skintrack.catalog()) + 1  # one metric a line, for grep
    assert any(line.startswith("count.wrinkle.right_crowsfeet ") and line.endswith("Number of deep wrinkles, right "
                                                                                  "crow's feet.") for line in listed)
    with subprocess.Popen([Path(sys.executable).with_name("skintrack"), "metrics"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as gone:
        gone.stdout.close()  # the reader leaves before a line is printed, as `| head` may
        said = gone.stderr.read()
    assert gone.returncode == 1 and said == ""  # no "Error: Broken pipe", no traceback
    method = on_a_terminal("endpoints", study, columns=200, env={"COLUMNS": "60"})  # $COLUMNS over the terminal's
    assert "method: MMRM of the change on baseline" in method and "\n  " in method  # prose wrapped, indented
    assert max(map(len, method.splitlines())) <= 60


def test_the_sample_generator_takes_help_as_help(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "skintrack.sample", *a], cwd=tmp_path,  # noqa: E731
                                    capture_output=True, text=True)
    helped = run("--help")
    assert helped.returncode == 0 and "usage: python -m skintrack.sample" in helped.stdout
    assert run("--bogus").returncode == 2
    assert list(tmp_path.iterdir()) == []


def test_manifest_mistakes_are_said_line_by_line_and_check_lists_them(tmp_path, sample, run_cli):
    lines = (sample / "manifest.csv").read_text().splitlines()
    fixed = {"responses/S05_W4.json": ("S05", "S5"), "responses/S06_W8.json": ("W8", "Wk8"),
             "responses/S07_W8.json": ("W8", "W4")}  # S07 then has two W4 captures
    out = [lines[0]]
    for line in lines[1:]:
        name = line.split(",")[0]
        if name in fixed:
            old, new = fixed[name]
            line = line.replace(f",{old},", f",{new},", 1)
        out.append(line)
    (tmp_path / "m.csv").write_text("\n".join(out) + "\n")
    where = {name: f"{tmp_path / 'm.csv'}:{out.index(next(x for x in out if x.startswith(name))) + 1}"
             for name in ("responses/S05_W4.json", "responses/S06_W8.json", "responses/S07_W4.json",
                          "responses/S07_W8.json")}
    proc = run_cli("ingest", sample / "responses", "--study", tmp_path / "s", "--manifest", tmp_path / "m.csv",
                   "--subjects", sample / "subjects.csv", "--quiet")
    assert proc.returncode == 1
    err = proc.stderr.splitlines()
    assert f"rejected: {where['responses/S05_W4.json']}: subject 'S5' is not in the subjects CSV (24 subjects known);" \
           " this row assigns nothing" in err
    for name in ("responses/S07_W4.json", "responses/S07_W8.json"):
        assert any(e.startswith(f"rejected: {where[name]}: S07 W4 is given by lines ") for e in err), err
    assert f"warning: {where['responses/S06_W8.json']}: visit 'Wk8' is used by this session only (other visits: " \
           "D0, W12, W4, W8); a typo?" in err
    s = skintrack.open(tmp_path / "s")
    assert s.cohort("score.water")["arm"].dropna().unique().tolist() == ["active", "placebo"]
    assert not s.cohort("score.water")["arm"].isna().any()  # S5's row assigned nothing: no arm "NaN"
    listed = run_cli("check", tmp_path / "s", "--csv")
    assert listed.returncode == 1
    found = skintrack.open(tmp_path / "s").check()
    assert sorted(found["problem"].str.split(" ").str[0]) == ["no", "no", "no", "visit"]
    assert "visit Wk8 is used by one session only (S06); a typo?" in found["problem"].tolist()
    assert run_cli("check", sample.parent.parent / "build" / "none").returncode == 2


def test_a_number_nothing_can_use_is_refused_by_name(run_cli, tmp_path):
    """One imputation (Rubin's rules would hide the spread between imputations: there is none), none (which
    ran 100), a negative seed, a NaN or infinite responder threshold, equivalence margin, QC limit or visit
    window, versions to keep, no worker, batch, commit, call in flight or rate of calls, or an emulator's latency,
    fault share or port out of range: each is refused naming it, from Python, the CLI and the plan, before any
    work (the batch size 0 took one file per chunk)."""
    from skintrack.analysis.qc import QCLimits
    from skintrack.demo import ingest_sample

    s = demo_study()
    for ask, said in [
            (lambda: s.sensitivity(imputations=1), "sensitivity.imputations must be a whole number of at least 2, not 1"),
            (lambda: s.sensitivity(imputations=0), "sensitivity.imputations must be a whole number of at least 2, not 0"),
            (lambda: s.sensitivity(seed=-1), "sensitivity.seed must be a whole number of at least 0, not -1"),
            (lambda: s.responders("score.water", math.nan), "the responder threshold must be a finite number, not nan"),
            (lambda: s.responders_between("score.water", threshold=math.inf),
             "the responder threshold of score.water must be a finite number, not inf"),
            (lambda: s.endpoint("score.water", margin=math.inf),
             "the equivalence margin must be a finite number above 0, not inf"),
            (lambda: s.qc(QCLimits(max_yaw=math.nan)), "the QC limit max_yaw must be a finite number, not nan")]:
        with pytest.raises(skintrack.UsageError) as e:
            ask()
        assert str(e.value) == said
    assert len(s.responders("score.water", np.int64(5))) == 6  # a numpy number is a number
    proc = run_cli("trends", s.path, "score.water", "--view", "responders", "--threshold", "nan", check=2)
    assert proc.stderr == "Error: the responder threshold must be a finite number, not nan\n"
    study = tmp_path / "s"
    ingest_sample(study)
    for args, said in [(("--responder", "score.water=nan"), 'responders: score.water threshold nan is neither a '
                                                            'finite number nor "mdc"'),
                       (("--visits", "D0:0:0,W4:28:inf,W8:56:3,W12:84:3"), "visit W4: window inf around day 28.0: a "
                                                                           "window is a finite number of days"),
                       (("--visits", "D0:0:0,W4:nan:3,W8:56:3,W12:84:3"), "visit W4: window 3.0 around day nan")]:
        assert said in run_cli("plan", study, *args, check=2).stderr
    plan = (study / "plan.toml").read_text()
    assert "imputations = 100" in plan
    (study / "plan.toml").write_text(plan.replace("imputations = 100", "imputations = 1"))
    assert "sensitivity.imputations must be a whole number of at least 2, not 1" in run_cli(
        "sensitivity", study, check=2).stderr
    versions = len(skintrack.open(study).history())
    for days in ("nan", "inf", "-1"):  # expiring versions by a number that is none: refused before any work
        assert "keep_days" in run_cli("compact", study, "--keep-days", days, check=2).stderr
    assert len(skintrack.open(study).history()) == versions
    sample = Path(__file__).parent.parent / "data" / "sample-trial"
    for args, said in [(("ingest", sample / "responses", "--workers", "0"), "workers must be a whole number of at least 1"),
                       (("ingest", sample / "responses", "--batch-size", "0"), "the batch size (files per chunk) must "
                                                                               "be a whole number of at least 1"),
                       (("ingest", sample / "responses", "--commit-every", "-1"), "commit_every (analyses per commit)"),
                       (("analyze", sample / "photos", "--concurrency", "0", "--dry-run"),
                        "concurrency (calls in flight at once) must be a whole number of at least 1, not 0"),
                       (("analyze", sample / "photos", "--qps", "-1", "--dry-run"), "qps -1.0: give the most call "
                                                                                    "starts per second"),
                       (("analyze", sample / "photos", "--qps", "nan", "--dry-run"), "must be a finite number, not nan")]:
        assert said in run_cli(*args, "--study", tmp_path / "new", check=2).stderr, args
    assert not (tmp_path / "new").exists()  # refused before any study was made
    for args, said in [(("--latency", "-1"), "latency must be at least 0, not -1.0"),
                       (("--fail-503", "1.5"), "share_503 must be a share between 0 and 1, not 1.5"),
                       (("--drop", "nan"), "share_drop must be a finite number, not nan"),
                       (("--port", "70000"), "70000 is not in the range 0<=x<=65535")]:  # the emulator never starts
        assert said in run_cli("emulate", *args, env={"AILABAPI_API_KEY": "k"}, check=2, timeout=30).stderr, args


def test_nothing_is_written_into_the_studys_own_files(run_cli, tmp_path):
    """A report, an export or a chart aimed inside the study's data files (compaction deletes what the lake does
    not know), its raw archive (an ingest of raw/ reads every JSON file), its face maps or its catalog is refused
    before anything is written; beside them, in the study folder, is fine."""
    from skintrack.show.export import export
    from skintrack.show.report import build_report

    s = demo_study()
    before = sorted(p.relative_to(s.path) for p in s.path.rglob("*"))
    for inside in ("lake", "lake/adam", "raw/out", "maps", "lake.sqlite"):
        for write in (lambda: export(s, s.path / inside, ["csv"]), lambda: build_report(s, s.path / inside, pdf=False)):
            with pytest.raises(UsageError, match="inside the study's own files"):
                write()
        proc = run_cli("plot", s.path, "trend", "score.water", "--out", s.path / inside / "t.png", check=2)
        assert "which skintrack manages: write it outside them" in proc.stderr
    assert sorted(p.relative_to(s.path) for p in s.path.rglob("*")) == before
    assert [p.name for p in export(s, tmp_path / "adam", ["csv"])] == ["adsl.csv", "adskin.csv", "define.csv"]


def test_a_metric_named_twice_is_refused(run_cli, tmp_path):
    """A metric listed twice would be counted twice: its Holm and BH p-values doubled (0.032 read 0.064), an
    export's parameter written twice. Every helper that takes a list of metrics refuses it, naming it; the plan's
    endpoints may name a metric at two visits, and the defaults drawn from them take it once."""
    from skintrack.show.export import export
    from skintrack.show.report import build_report

    s = demo_study()
    said = "score.water is named twice: name each metric once"
    twice = ["score.water", "score.rough", "score.water"]
    for name, ask in [("compare", lambda: s.compare(twice, "D0", "W12")), ("claims", lambda: s.claims(twice)),
                      ("repeatability", lambda: s.repeatability(twice)), ("raters", lambda: s.raters(twice)),
                      ("export", lambda: export(s, tmp_path / "adam", ["csv"], twice)),
                      ("report", lambda: build_report(s, tmp_path / "r", twice, pdf=False))]:
        with pytest.raises(UsageError) as e:
            ask()
        assert str(e.value) == said, name
    assert not (tmp_path / "adam").exists() and not (tmp_path / "r").exists()
    proc = run_cli("compare", s.path, "score.water", "score.water", "--baseline", "D0", "--followup", "W12", check=2)
    assert said in proc.stderr
    once = s.compare(["score.water", "score.rough"], "D0", "W12")
    assert once["p_holm"].notna().all() and len(once) == 4


CSV_KINDS = {  # kind: (header, a good row of S{n}, a row the kind's own checks reject, that reason)
    "manifest": ("file,subject_id,visit", "S{n}.json,S{n},D0", ",S09,D0", "row has no `file`"),
    "subjects": ("subject_id,arm", "S{n},placebo", ",active", "row has no `subject_id`"),
    "measures": ("subject_id,visit,measure,value", "S{n},D0,corneometer,40", "S09,D0,corneometer,x",
                 "value 'x' is not a number"),
}


def _read(kind: str, path: Path):
    """(rows, rejects) of a CSV of `kind`, read as `ingest` reads it."""
    from skintrack.tables import manifest, measures

    if kind == "manifest":
        m = manifest.Manifest.read(path)
        return m.rows, m.rejects
    return manifest.read_subjects(path) if kind == "subjects" else measures.read_measures(path, {})


@pytest.mark.parametrize("kind", CSV_KINDS)
def test_a_csv_row_is_named_by_the_line_it_starts_on_and_a_row_too_wide_is_its_own_reject(tmp_path, kind):
    header, good, bad, reason = CSV_KINDS[kind]
    width = header.count(",") + 1
    row = lambda n: good.replace("{n}", f"0{n}")  # noqa: E731
    quoted = '"S0\n2",' + row(2).split(",", 1)[1]  # a quoted cell over two lines (its line break kept)
    lines = [header, row(1), "", "   ", quoted,  # blank lines, and a row of two lines
             row(3) + ",,",  # empty cells after the last column are no cells
             "," * (width - 1),  # Excel's empty row
             row(4) + ",extra", '"S05"x,' + row(5).split(",", 1)[1], bad]
    (tmp_path / "x.csv").write_text("\n".join(lines) + "\n")
    rows, rejects = _read(kind, tmp_path / "x.csv")
    where = f"{tmp_path / 'x.csv'}"
    assert rejects == [(f"{where}:9", f"{width + 1} cells where the header has {width} columns (a comma inside a "
                                       "value? put the value in double quotes); the row is not used"),
                       (f"{where}:10", "not readable as CSV (',' expected after '\"'): a cell holding a quote is "
                                       'put in double quotes, with its own quotes doubled ("a ""b"" c"); the row is '
                                       "not used"),
                       (f"{where}:11", rejects[2][1])]
    assert rejects[2][1].startswith(reason)
    assert rows["file" if kind == "manifest" else "subject_id"].tolist()[1] == "S0\n2"  # the cell over two lines
    assert len(rows) == 3
    if kind == "manifest":  # where a row was read (a subjects row's rejects name theirs, above)
        assert rows["_line"].tolist() == [2, 5, 7]
    elif kind == "measures":
        assert rows["source"].tolist() == ["x.csv:2", "x.csv:5", "x.csv:7"]


UTF8 = "; save the CSV as UTF-8 (in Excel: CSV UTF-8)"


@pytest.mark.parametrize("kind", CSV_KINDS)
@pytest.mark.parametrize("content, said", [
    (lambda h, g: f"{h}\n{g}\nS9,été\n".encode("latin-1"), ":3: not UTF-8 text (byte 0xe9)" + UTF8),
    (lambda h, g: f"{h}\n{g}\n".encode("utf-16"), ":1: UTF-16 text" + UTF8),
    (lambda h, g: f'{h}\n\n{g}\n"S9,unclosed\n{g}\n'.encode(), ":4: a quoted cell opened on this line is never closed"),
    (lambda h, g: f"{h},\n{g},\n{g},oops\n".encode(), ":3: column {n} holds a value but has no name in the header; "
                                                      "name it"),
    (lambda h, g: b"", ": the file is empty (a {kind} CSV starts with a header: {required}, ...)"),
], ids=["latin-1", "utf-16", "quote-never-closed", "column-without-name", "empty"])
def test_a_csv_that_cannot_be_used_at_all_is_one_line_naming_where(tmp_path, kind, content, said):
    from skintrack.errors import InvalidManifest
    from skintrack.tables.measures import REQUIRED

    header, good, _, _ = CSV_KINDS[kind]
    (tmp_path / "x.csv").write_bytes(content(header, good.replace("{n}", "01")))
    with pytest.raises(InvalidManifest) as e:
        _read(kind, tmp_path / "x.csv")
    required = {"manifest": "file", "subjects": "subject_id", "measures": ", ".join(REQUIRED)}[kind]
    assert str(e.value) == f"{tmp_path / 'x.csv'}" + said.format(n=header.count(",") + 2, kind=kind, required=required)


def test_a_measures_csv_that_cannot_be_used_is_said_before_any_response_is_read(tmp_path, sample, run_cli):
    (tmp_path / "m.csv").write_text("subject_id,visit,measure\nS01,D0,corneometer\n")
    proc = run_cli("ingest", sample / "responses", "--study", tmp_path / "s", "--measures", tmp_path / "m.csv")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"Error: {tmp_path / 'm.csv'}:1: the required column `value` is missing (columns: "
                                   "subject_id, visit, measure)")  # no progress bar: no response was read

"""`skintrack analyze`: a batch of photos through the API, never losing or double-billing one.

Every photo is checked before anything is paid for; photos already analysed with the same parameters
are skipped without network; calls run on a bounded thread pool under a QPS limit; each response is
archived the moment it arrives; then the archive is ingested. Interrupting a batch (Ctrl-C) lets the calls
in flight finish; a re-run finishes the job. A batch killed outright (SIGKILL, a power cut) leaves a record
of each call it had in flight: those may have been billed, so a re-run holds them back as uncertain.

With a sentinel panel (`sentinel`: a folder of 3-5 reference photos), each batch sends the panel before
any study photo and again at its end, archives and ingests those results as sentinel analyses, and
compares them with the reference run (`skintrack.analysis.instrument.drift`): a shift beyond the minimal
detectable change, or another API generation, stops the batch before a study photo is paid for, unless
the user accepts it (`accept_drift`, recorded in the study's history); a change between the batch's two
runs marks the batch as measured across a change. The panel costs two calls per photo per batch.

A call sent whole whose answer is lost (a dropped connection, a cut body, a read timeout) may have been
billed: it is recorded as uncertain, listed, and never sent again by a later run unless asked
(`resend_uncertain`, which may pay twice).

Example
-------
>>> import tempfile
>>> from skintrack.sample import sample_photo
>>> r = analyze([sample_photo(tempfile.mkdtemp())], tempfile.mkdtemp(), dry_run=True)
>>> (r.planned, r.skipped, r.invalid)
(1, 0, [])
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .archive import SENTINEL, Archive, envelope
from .client import Client
from ..errors import AnswerLost, ApiError, InvalidManifest, PhotoRejected, UsageError, finite, whole
from ..tables.ingest import IngestReport, ingest
from ..tables.manifest import Manifest
from ..tables.store import record_event
from .request import Params, prepare_photo

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".gif"}


@dataclass
class AnalyzeReport:
    """What a batch did: planned and skipped calls, refused photos, successes, the photos' own failures
    with reasons, the calls whose answer was lost (`uncertain`: maybe billed) and the photos held back
    because an earlier call of theirs is (`held`), and why the batch stopped early if it did."""

    planned: int = 0
    skipped: int = 0
    invalid: list = field(default_factory=list)
    same: list = field(default_factory=list)  # (photo, the photo with the same bytes that is called for it)
    succeeded: int = 0
    failed: list = field(default_factory=list)
    uncertain: list = field(default_factory=list)  # (photo, what happened): sent whole, answer lost
    held: list = field(default_factory=list)  # (photo, why): not sent, an earlier call of it is uncertain
    stopped: str | None = None
    not_started: int = 0
    batch: str | None = None
    sentinel_calls: int = 0  # planned (dry run), then sent: the panel at the start and at the end of the batch
    sentinel_photos: int = 0
    drift: str | None = None  # what moved at the start of the batch (stopped, or accepted)
    changed_within: str | None = None  # what moved between the batch's start and end runs
    seconds: float = 0.0
    interrupted: bool = False
    ingested: IngestReport | None = None

    @property
    def ok(self) -> bool:
        return not (self.invalid or self.failed or self.uncertain or self.held or self.interrupted or self.stopped
                    or self.changed_within or (self.ingested and not self.ingested.ok))


class RateLimiter:
    """A token bucket: on average at most `qps` call starts per second, with bursts of up to one
    second's worth (`qps` calls), shared by all threads. None means no limit.

    Example
    -------
    >>> limiter = RateLimiter(100)
    >>> t0 = time.monotonic()
    >>> for _ in range(150):  # 100 at once (one second's burst), then 50 more at 100 per second
    ...     limiter.wait()
    >>> 0.45 < time.monotonic() - t0 < 0.7
    True
    """

    def __init__(self, qps: float | None):
        if qps is not None and finite(qps, "qps (most call starts per second; 0: no limit)") < 0:
            raise UsageError(f"qps {qps}: give the most call starts per second, 0 for no limit")
        self.rate = qps or 0.0
        self.capacity = max(1.0, self.rate)
        self._tokens, self._stamp = self.capacity, time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0  # may go negative: a debt that later callers wait out in turn
            delay = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if delay:
            time.sleep(delay)


def find_photos(sources) -> list[str]:
    """Photos among files and folders (searched recursively), sorted."""
    out = set()
    for s in map(Path, sources):
        if s.is_dir():
            out.update(str(p) for p in s.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif s.is_file():
            out.add(str(s))
        else:
            raise UsageError(f"{s}: no such photo or folder")
    return sorted(out)


def analyze(photos, study, manifest=None, params: Params = Params(), client: Client | None = None,
            concurrency: int = 4, qps: float | None = 2.0, dry_run: bool = False, retry_failed: bool = False,
            fix: bool = False, run_ingest: bool = True, progress: bool = False,
            resend_uncertain: bool = False, sentinel=None, accept_drift: bool = False) -> AnalyzeReport:
    """Analyse photos into the study at `study` (see the module docstring).

    One `analyze` runs on a study at a time (a second one is refused at once), so no photo is ever
    paid for twice; photos with the same bytes are one call. A failure of the account, the key, the
    request or the service stops the batch at once; it is not archived, and the next run tries again.
    A photo whose earlier call may have been billed (its answer was lost) is sent again only with
    `resend_uncertain`. `sentinel` is the panel's folder, `accept_drift` continues past a drift it finds.
    """
    t0 = time.perf_counter()
    concurrency, limiter = whole(concurrency, "concurrency (calls in flight at once)"), RateLimiter(qps)
    study = Path(study)
    report = AnalyzeReport()
    man = Manifest.read(manifest) if manifest else None
    if man is not None and man.rejects:  # a row says whose visit a paid answer is: it is fixed before anything is paid
        said = "; ".join(f"{where}: {why}" for where, why in man.rejects[:5])
        raise InvalidManifest(f"{len(man.rejects)} row(s) of the manifest cannot be used, so no photo was sent: {said}"
                              f"{' ...' if len(man.rejects) > 5 else ''}")
    with contextlib.nullcontext() if dry_run else Archive.claim(study):
        archive = Archive(study, claimed=not dry_run)
        jobs = _plan(find_photos(photos), man, params, fix, archive, retry_failed, resend_uncertain, report)
        panel = _panel(sentinel, fix) if sentinel else []
        report.planned = len(jobs)
        report.sentinel_calls, report.sentinel_photos = (2 * len(panel) if jobs else 0), len(panel)
        if not dry_run and jobs:
            client = client or Client()
            watch = Watch(study, panel, client, params, archive, limiter, report) if panel else None
            if watch is None or watch.start(accept_drift):
                _run(jobs, client, params, archive, concurrency, limiter, progress, report)
                if watch is not None and not report.interrupted and not report.stopped:
                    watch.end()
        report.seconds = time.perf_counter() - t0
        if run_ingest and not dry_run and (study / "raw").exists():
            report.ingested = ingest([study / "raw"], study, manifest=man, progress=progress)
    return report


def _plan(paths, man, params, fix, archive, retry_failed, resend_uncertain, report) -> list[tuple]:
    """Check every photo before anything is paid for; one job per distinct call not yet archived."""
    jobs, calls = [], {}
    for path in paths:
        row = man.match(path) if man else None  # a refused photo's row is used, not "missing"
        try:
            photo = prepare_photo(path, fix=fix)
            left = right = None
            if row:
                base = Path(man.path).parent
                left = prepare_photo(base / row["left_side_file"], fix=fix) if row.get("left_side_file") else None
                right = prepare_photo(base / row["right_side_file"], fix=fix) if row.get("right_side_file") else None
            if "jawline_info" in params.return_side_results and not (left and right):
                raise PhotoRejected(f"{path}: jawline_info needs left_side_file and right_side_file in the manifest")
        except PhotoRejected as e:
            report.invalid.append((path, str(e)))
            continue
        call = (photo.sha256, left and left.sha256, right and right.sha256)
        if call in calls:
            report.same.append((path, calls[call]))
        elif archive.done(photo.sha256, params.key(), retry_failed):
            report.skipped += 1
        elif (earlier := archive.uncertain(photo.sha256, params.key())) and not resend_uncertain:
            when = earlier.get("recorded_at", "at an unknown time")
            report.held.append((path, f"an earlier call (recorded {when}) was sent but its answer was lost" if
                                earlier["lost"] == "answer lost" else
                                f"an earlier run ended with this call in flight (recorded {when}), its answer "
                                "never recorded"))
        else:
            calls[call] = path
            jobs.append((photo, left, right))
    return jobs


def _panel(folder, fix: bool) -> list:
    """The sentinel panel's photos, checked like study photos (a bad one is a usage error: the panel must
    be whole before anything is paid for)."""
    paths = find_photos([folder])
    if not paths:
        raise UsageError(f"{folder}: the sentinel panel holds no photo")
    try:
        return [prepare_photo(p, fix=fix) for p in paths]
    except PhotoRejected as e:
        raise UsageError(f"sentinel panel: {e}") from None


class Watch:
    """The sentinel of one batch: the panel sent at its start (compared with the reference run: a drift
    stops the batch unless accepted) and at its end (compared with the start: a change inside the batch)."""

    def __init__(self, study, panel, client, params, archive, limiter, report):
        import datetime as dt
        import secrets

        self.study, self.panel, self.client, self.params = Path(study), panel, client, params
        self.archive, self.limiter, self.report = archive, limiter, report
        report.batch = self.batch = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)
        report.sentinel_calls = 0  # counted as sent from here on

    def _send(self, position: str) -> int:
        """Send the panel once; returns how many results came back (a failure about the account, key or
        service stops the batch)."""
        done = 0
        for photo in self.panel:
            self.limiter.wait()
            self.report.sentinel_calls += 1
            try:
                reply = self.client.call(photo, self.params)
            except AnswerLost:  # maybe billed; a sentinel is never sent again by itself
                continue
            except ApiError as e:
                if not e.about_photo:
                    self.report.stopped = f"{type(e).__name__}: {e}"
                    return done
                continue
            self.archive.write_sentinel(photo, self.params.key(), reply.body, envelope(photo, self.params, reply),
                                        self.batch, position)
            done += 1
        ingest([self.archive.dir / SENTINEL / self.batch], self.study)
        return done

    def start(self, accept: bool) -> bool:
        """The start run; whether the batch may go on."""
        from ..analysis.instrument import drift, verdict
        from ..analysis.study import open as open_study

        if not self._send("start"):
            if not self.report.stopped:
                self.report.stopped = ("no sentinel photo could be analysed at the start of the batch: the "
                                       "instrument cannot be watched")
                self.report.not_started = self.report.planned
            return False
        table = drift(open_study(self.study), batch=self.batch)
        self.report.drift = verdict(table[table["position"] == "start"])
        if self.report.drift and not accept:
            self.report.stopped = (f"the sentinel panel moved beyond its noise since the reference run: "
                                   f"{self.report.drift}. If the vendor changed its model, `skintrack drift` shows "
                                   "the shifts and --accept-drift goes on (recorded in the study's history)")
            self.report.not_started = self.report.planned
            return False
        if self.report.drift:
            record_event(self.study, self.batch, "accepted drift", self.report.drift)
        return True

    def end(self) -> None:
        """The end run, compared with the start run of the same batch."""
        from ..analysis.instrument import within_batch
        from ..analysis.study import open as open_study

        if self._send("end"):
            self.report.changed_within = within_batch(open_study(self.study), self.batch)
            if self.report.changed_within:
                record_event(self.study, self.batch, "changed within batch", self.report.changed_within)


def _run(jobs, client, params, archive, concurrency, limiter, progress, report) -> None:
    """Call the API for each job on a bounded pool; archive each answer as it arrives. The first failure
    that is not about the photo stops the batch: calls in flight finish, no new call starts."""
    stop = threading.Event()
    batch = {"batch": report.batch} if report.batch else {}

    def one(job):
        photo, left, right = job
        limiter.wait()
        if stop.is_set():
            return photo, None, False
        # removed only once the outcome is recorded: a run killed before that leaves it, and the photo is held back
        flight = archive.in_flight(photo, params.key(), envelope(photo, params, left=left, right=right) | batch)
        try:
            reply = client.call(photo, params, left, right)
        except AnswerLost as e:  # maybe billed: recorded, never sent again by itself
            archive.mark_uncertain(photo, params.key(), envelope(photo, params, error=e, left=left, right=right) | batch)
            err = e
        except ApiError as e:
            if e.about_photo and e.body is not None:  # the photo's own final outcome: archive it
                archive.write(photo, params.key(), e.body, envelope(photo, params, error=e, left=left, right=right) |
                              batch, ok=False)
            else:
                stop.set()
            err = e
        else:
            archive.write(photo, params.key(), reply.body, envelope(photo, params, reply, left=left, right=right) |
                          batch, ok=True)
            err = None
        flight.unlink(missing_ok=True)
        return photo, err, True

    bar = tqdm(total=len(jobs), unit="photo", desc="analyze", disable=not progress)
    pool = concurrent.futures.ThreadPoolExecutor(concurrency)
    futures, counted = [pool.submit(one, j) for j in jobs], set()

    def count(fut):
        counted.add(fut)
        photo, err, started = fut.result()
        if not started:
            report.not_started += 1
        elif err is None:
            report.succeeded += 1
        elif isinstance(err, AnswerLost):
            report.uncertain.append((photo.path, str(err)))
        elif err.about_photo:
            report.failed.append((photo.path, str(err)))
        elif report.stopped is None:
            report.stopped = f"{type(err).__name__}: {err}"
        else:
            report.not_started += 1  # a call in flight that met the same trouble: not analysed, tried next run
        bar.update(1)
        bar.set_postfix(ok=report.succeeded, failed=len(report.failed))

    try:
        for fut in concurrent.futures.as_completed(futures):
            count(fut)
    except KeyboardInterrupt:
        report.interrupted = True
        pool.shutdown(wait=True, cancel_futures=True)  # calls in flight finish and are archived
        for fut in futures:
            if fut.done() and not fut.cancelled() and fut not in counted:
                count(fut)
    finally:
        pool.shutdown(wait=True)
        archive.end_run()
        bar.close()


def summary(report: AnalyzeReport, dry_run: bool = False) -> str:
    """A few lines for people: what was called, skipped, refused and why; why a batch stopped."""
    refused = [f"refused: {r}" if r.startswith(p) else f"refused: {p}: {r}" for p, r in report.invalid]
    same = [f"same photo: {p} has the bytes of {q}: one call for both" for p, q in report.same]
    held = [f"held back: {p}: {why}, so it may have been billed; --resend-uncertain sends it again and MAY PAY "
            "TWICE" for p, why in report.held]
    uncertain = [f"uncertain: {p}: {why}; not sent again (--resend-uncertain would, and may pay twice)"
                 for p, why in report.uncertain]
    watch = [f"sentinel: {report.sentinel_calls} calls (a panel of {report.sentinel_photos} photos, sent at the "
             "start and at the end of the batch)"] if report.sentinel_calls else []
    if dry_run:
        return os.linesep.join([f"dry run: {report.planned + report.sentinel_calls} calls would be made "
                                f"({report.planned} study photos" + (f", {report.sentinel_calls} sentinel" if
                                                                     report.sentinel_calls else "") +
                                f"); {report.skipped} photos already analysed; {len(report.invalid)} refused before "
                                f"paying; {len(report.held)} held back (an earlier call may have been billed)"]
                               + watch + refused + same + held)
    lines = [f"analyzed {report.succeeded} of {report.planned} planned calls in {report.seconds:.1f} s; "
             f"skipped {report.skipped} already analysed; refused {len(report.invalid)} before paying; "
             f"failed {len(report.failed)}; uncertain {len(report.uncertain)} (sent, answer lost: maybe billed); "
             f"held back {len(report.held)}" + ("; INTERRUPTED: run again to finish" if report.interrupted else "")]
    if report.stopped and report.stopped.startswith(("the sentinel", "no sentinel")):
        lines.append(f"STOPPED by the sentinel before any study photo was sent: {report.stopped}. "
                     f"{report.not_started} photos were not sent.")
    elif report.stopped:
        lines.append(f"STOPPED at the first error that is not about a photo: {report.stopped}. Nothing was recorded "
                     f"for it; {report.not_started} photos were not sent. Fix it and run the same command again.")
    if report.batch:
        lines.append(f"batch {report.batch}: " + "; ".join(
            watch + ([f"accepted drift: {report.drift}"] if report.drift and not report.stopped else []) +
            ([f"MEASURED ACROSS A CHANGE: between its start and end the sentinel moved: {report.changed_within}"]
             if report.changed_within else [])) + ("" if report.drift or report.changed_within or report.stopped
                                                   else "; the sentinel did not move beyond its noise"))
    lines += refused + same + [f"failed: {p}: {r}" for p, r in report.failed] + uncertain + held
    if report.ingested:
        i = report.ingested
        lines.append(f"ingested {i.added} new analyses ({i.skipped} already held, {len(i.rejected)} rejected)")
    return os.linesep.join(lines)

"""The study's `raw/` archive: every final API response, verbatim, with an envelope beside it.

``raw/<photo stem>.<photo sha256[:12]>.<params key>.json`` holds the response body exactly as received
(``.failed.json`` for a documented failure); ``.meta.json`` beside it is the envelope: photo path and
SHA-256, what `--fix` did, request parameters (never the key), HTTP status, attempts and timings. The
envelope is written first and the body last, each atomically; a photo counts as done once its body exists.

``raw/sentinel/<batch>/<name>.<start|end>.json`` holds the sentinel panel's results of one batch (the
envelope names the batch and the position); they are ingested as sentinel analyses, never a subject's.

``raw/.uncertain/<same name>.json`` records a call that was sent whole but whose answer was lost: the
service may have billed it, so it is not sent again unless asked (`--resend-uncertain`); its answer, if
one comes later, replaces the record.

``raw/.inflight/<run>/<same name>.json`` is written before a call is sent and removed once its outcome is
recorded. A run killed with calls in flight (SIGKILL, a power cut) leaves these records; the calls may have
been billed, so later runs count them as uncertain until an answer for the photo is archived.

Example
-------
>>> import tempfile
>>> Archive(tempfile.mkdtemp()).done("0" * 64, "abcd1234")
False
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from pathlib import Path

import orjson

from ..errors import AnswerLost
from ..sinks import file_name
from ..tables.codes import about_photo
from ..tables.store import exclusive, write_atomic


_NAME = re.compile(r"^.+\.(?P<sha12>[0-9a-f]{12})\.(?P<key>[0-9a-f]{8})(?P<failed>\.failed(\.[0-9T]+)?)?\.json$")
UNCERTAIN = ".uncertain"  # under raw/: calls sent whose answer was lost (a folder ingest does not walk)
IN_FLIGHT = ".inflight"  # under raw/: one folder per run, a record per call sent and not yet settled
SENTINEL = "sentinel"  # under raw/: the sentinel panel's results, one folder per batch


class Archive:
    """Index and writer of a study's raw/ folder."""

    def __init__(self, study, claimed: bool = False):
        """Index the archive. `claimed`: this process holds the study's analyze claim (`Archive.claim`), so
        what dead runs left is tidied: half-written files, and in-flight records of calls whose answer is
        archived (killed in between). Without the claim nothing is touched: another run may be live."""
        self.dir = Path(study) / "raw"
        self._outcomes: dict[tuple[str, str], set[str]] = {}
        # per call, the records that leave it uncertain: answers lost, and dead runs' calls in flight
        self._uncertain: dict[tuple[str, str], list[Path]] = {}
        self._run = self.dir / IN_FLIGHT / f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%f}-{os.getpid()}"
        if not self.dir.exists():
            return
        if claimed:  # what a crash or a full disk left half-written (a record's call was never sent)
            for p in [*self.dir.glob("*.tmp"), *self.dir.glob(f"{UNCERTAIN}/*.tmp"),
                      *self.dir.glob(f"{IN_FLIGHT}/*/*.tmp")]:
                p.unlink(missing_ok=True)
        for p in [*self.dir.glob(f"{UNCERTAIN}/*.json"), *self.dir.glob(f"{IN_FLIGHT}/*/*.json")]:
            if m := _NAME.match(p.name):
                self._uncertain.setdefault((m["sha12"], m["key"]), []).append(p)
        for p in self.dir.iterdir():
            m = _NAME.match(p.name)
            if m and (not m["failed"] or _about_photo(p)):
                outcome = "failed" if m["failed"] else "ok"
                self._outcomes.setdefault((m["sha12"], m["key"]), set()).add(outcome)
        if claimed:
            for call in [c for c in self._uncertain if "ok" in self._outcomes.get(c, ())]:
                self._settle(call)  # a run killed between archiving the answer and removing the record
            for folder in self.dir.glob(f"{IN_FLIGHT}/*"):
                _remove_if_empty(folder)  # a dead run's

    @staticmethod
    @contextlib.contextmanager
    def claim(study):
        """Hold the study's analyze lock for a whole run: a second `analyze` on the study is refused at once."""
        with exclusive(study, ".analyze.lock", "another `skintrack analyze` is running on this study; wait for it "
                                               "to finish (two at once could pay for the same photos twice)"):
            yield

    def done(self, photo_sha256: str, params_key: str, retry_failed: bool = False) -> bool:
        """Whether this photo was already analysed with these parameters (its own failure counts unless
        retried; a failure of the account, key or service, archived by older versions, never counts)."""
        outcomes = self._outcomes.get((photo_sha256[:12], params_key), set())
        return "ok" in outcomes or (bool(outcomes) and not retry_failed)

    def uncertain(self, photo_sha256: str, params_key: str) -> dict | None:
        """The record of an earlier call of this photo whose answer was lost or never recorded, with `lost`
        saying which (None when there is none)."""
        records = self._uncertain.get((photo_sha256[:12], params_key))
        if not records:
            return None
        path = min(records, key=lambda r: r.parent.name != UNCERTAIN)  # a lost answer says more than a dead run
        try:
            record = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            record = {"photo": str(path)}
        return dict(record, lost="answer lost" if path.parent.name == UNCERTAIN else "in flight")

    def in_flight(self, photo, params_key: str, envelope: dict) -> Path:
        """Record a call before it is sent; the caller removes the record once the call's outcome is recorded
        (`Path.unlink`). A record a dead run left makes later runs hold the photo back as uncertain."""
        return _record(self._run, photo, params_key, envelope)

    def end_run(self) -> None:
        """Remove this run's in-flight folder once every record in it is settled."""
        _remove_if_empty(self._run)

    def mark_uncertain(self, photo, params_key: str, envelope: dict) -> Path:
        """Record a call sent whole whose answer was lost (it may have been billed)."""
        path = _record(self.dir / UNCERTAIN, photo, params_key, envelope)
        records = self._uncertain.setdefault((photo.sha256[:12], params_key), [])
        if path not in records:
            records.append(path)
        return path

    def write(self, photo, params_key: str, body: bytes, envelope: dict, ok: bool) -> Path:
        """Archive one response (an answer that settles an uncertain call removes its record); returns the
        body's path."""
        name = f"{_stem(photo)}.{photo.sha256[:12]}.{params_key}" + ("" if ok else ".failed")
        if not ok and (self.dir / f"{name}.json").exists():  # an earlier failure of the same call: keep both
            name += "." + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        envelope = dict(envelope, archived_at=dt.datetime.now(dt.timezone.utc).isoformat())
        write_atomic(self.dir / f"{name}.meta.json", orjson.dumps(envelope, option=orjson.OPT_INDENT_2))
        write_atomic(self.dir / f"{name}.json", body)
        self._outcomes.setdefault((photo.sha256[:12], params_key), set()).add("ok" if ok else "failed")
        self._settle((photo.sha256[:12], params_key))
        return self.dir / f"{name}.json"

    def _settle(self, call: tuple[str, str]) -> None:
        """Remove the records that left a call uncertain, now that its answer is archived."""
        for record in self._uncertain.pop(call, []):
            record.unlink(missing_ok=True)
            if record.parent.parent.name == IN_FLIGHT:
                _remove_if_empty(record.parent)  # a dead run's folder, once its last record is settled

    def write_sentinel(self, photo, params_key: str, body: bytes, envelope: dict, batch: str, position: str) -> Path:
        """Archive one sentinel result under ``raw/sentinel/<batch>/`` (a sentinel is re-sent every batch, so
        its results never count as the photo being done)."""
        folder = self.dir / SENTINEL / batch  # an id `analyze` made: safe as it is
        name = f"{_stem(photo)}.{photo.sha256[:12]}.{params_key}.{position}"
        envelope = dict(envelope, batch=batch, sentinel={"name": Path(photo.path).name, "position": position},
                        archived_at=dt.datetime.now(dt.timezone.utc).isoformat())
        write_atomic(folder / f"{name}.meta.json", orjson.dumps(envelope, option=orjson.OPT_INDENT_2))
        write_atomic(folder / f"{name}.json", body)
        return folder / f"{name}.json"


def _record(folder: Path, photo, params_key: str, envelope: dict) -> Path:
    """Write a call's record (its envelope and when) into `folder`, under the archive's name for the call."""
    path = folder / f"{_stem(photo)}.{photo.sha256[:12]}.{params_key}.json"
    write_atomic(path, orjson.dumps(dict(envelope, recorded_at=dt.datetime.now(dt.timezone.utc).isoformat()),
                                    option=orjson.OPT_INDENT_2))
    return path


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty, or gone already
        folder.rmdir()


def _stem(photo) -> str:
    """The archive name's readable part: the photo's name made safe for a file name (no dots, which
    separate the name's fields)."""
    return file_name(Path(photo.path).stem, most=60).replace(".", "_")


def _about_photo(path: Path) -> bool:
    """Whether an archived failure is the photo's own outcome (no face, ...), by its documented code."""
    try:
        doc = orjson.loads(path.read_bytes())
        detail = doc.get("error_detail") or {}
        code = detail.get("code") or doc.get("error_code_str")
        return about_photo(code, detail.get("status_code") or doc.get("error_code"))
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return False


def envelope(photo, params, reply=None, error=None, left=None, right=None) -> dict:
    """The archive envelope of one call (no API key: it is never held outside the client)."""
    out = {"photo": os.path.abspath(photo.path), "photo_sha256": photo.sha256, "fixes": list(photo.fixes),
           "sent_bytes": len(photo.data), "width": photo.width, "height": photo.height, "params": params.form(),
           "side_images": {k: {"path": os.path.abspath(p.path), "sha256": p.sha256}
                           for k, p in (("left", left), ("right", right)) if p is not None}}
    if reply is not None:
        out.update(http_status=reply.status, attempts=reply.attempts, seconds=round(reply.seconds, 3),
                   started_at=dt.datetime.fromtimestamp(reply.started_at, dt.timezone.utc).isoformat(),
                   retried=reply.errors, outcome="ok")
    if error is not None:
        out.update(http_status=error.status, attempts=getattr(error, "attempts", 1), error=str(error),
                   error_code=error.code, outcome="failed")
        if isinstance(error, AnswerLost) and error.body:  # what arrived of a lost answer, kept
            out["received"] = error.body.decode("utf-8", "replace")
    return out

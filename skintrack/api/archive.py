"""The study's `raw/` archive: every final API response, verbatim, with an envelope beside it.

``raw/<photo stem>.<photo sha256[:12]>.<params key>.json`` holds the response body exactly as received
(``.failed.json`` for a documented failure); ``.meta.json`` beside it is the envelope: photo path and
SHA-256, what `--fix` did, request parameters (never the key), HTTP status, attempts and timings. The
envelope is written first and the body last, each atomically; a photo counts as done once its body exists.

Example
-------
>>> import tempfile
>>> Archive(tempfile.mkdtemp()).done("0" * 64, "abcd1234")
False
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import orjson

from ..tables.store import write_atomic


class Archive:
    """Index and writer of a study's raw/ folder."""

    def __init__(self, study):
        self.dir = Path(study) / "raw"
        self._outcomes: dict[tuple[str, str], set[str]] = {}
        if self.dir.exists():
            for p in self.dir.glob("*.json"):
                parts = p.name.split(".")
                if len(parts) >= 4 and parts[-2] != "meta":
                    outcome = "failed" if parts[-2] == "failed" else "ok"
                    sha12, key = (parts[-4], parts[-3]) if outcome == "failed" else (parts[-3], parts[-2])
                    self._outcomes.setdefault((sha12, key), set()).add(outcome)

    def done(self, photo_sha256: str, params_key: str, retry_failed: bool = False) -> bool:
        """Whether this photo was already analysed with these parameters (a failure counts unless retried)."""
        outcomes = self._outcomes.get((photo_sha256[:12], params_key), set())
        return "ok" in outcomes or (bool(outcomes) and not retry_failed)

    def write(self, photo, params_key: str, body: bytes, envelope: dict, ok: bool) -> Path:
        """Archive one response; returns the body's path."""
        stem = Path(photo.path).stem.replace(".", "_")[:80] or "photo"
        name = f"{stem}.{photo.sha256[:12]}.{params_key}" + ("" if ok else ".failed")
        if not ok and (self.dir / f"{name}.json").exists():  # an earlier failure of the same call: keep both
            name += "." + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        envelope = dict(envelope, archived_at=dt.datetime.now(dt.timezone.utc).isoformat())
        write_atomic(self.dir / f"{name}.meta.json", orjson.dumps(envelope, option=orjson.OPT_INDENT_2))
        write_atomic(self.dir / f"{name}.json", body)
        self._outcomes.setdefault((photo.sha256[:12], params_key), set()).add("ok" if ok else "failed")
        return self.dir / f"{name}.json"


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
    return out

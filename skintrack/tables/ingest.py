"""Ingest responses into a study: parse, flatten, decode maps, and publish atomic batches.

Re-ingesting is a no-op (files already seen are skipped by size and time, responses already held by
their content hash), so adding k responses to a study of N costs time in proportion to k.

Example
-------
>>> import tempfile
>>> from skintrack.sample import sample_study_dir
>>> report = ingest([sample_study_dir() / "responses"], tempfile.mkdtemp(),
...                 manifest=sample_study_dir() / "manifest.csv")
>>> report.added, report.rejected
(96, [])
"""
from __future__ import annotations

import base64
import binascii
import concurrent.futures
import datetime as dt
import gc
import glob
import gzip
import hashlib
import io
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
from PIL import Image
from tqdm.auto import tqdm

from . import store
from ..errors import InvalidInput, InvalidResponse
from .flatten import flatten
from .manifest import Manifest, read_subjects
from .schema import TABLES

CHUNK = 200
CHUNK_BYTES = 48 * 2**20
SESSION_TYPES = {"analysis_id": pa.string(), "subject_id": pa.string(), "visit": pa.string(),
                 "taken_at": pa.timestamp("us"), "assigned_at": pa.timestamp("us", tz="UTC")}
META_SUFFIX = ".meta.json"
_MEDIA = {b"\xff\xd8": ("image/jpeg", "jpg"), b"\x89P": ("image/png", "png")}


@dataclass
class IngestReport:
    """What one ingest did: counts, the rejected inputs with reasons, and how long it took."""

    added: int = 0
    skipped: int = 0
    sessions: int = 0
    subjects: int = 0
    rejected: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.rejected


def expand(sources) -> tuple[list[str], list[tuple[str, str]]]:
    """Turn files, folders (recursive) and globs into a sorted list of response files, plus rejects."""
    files, rejects = set(), []
    for s in map(str, sources):
        if os.path.isdir(s):
            hits = [p for pat in ("**/*.json", "**/*.json.gz") for p in glob.glob(os.path.join(s, pat), recursive=True)]
        elif os.path.isfile(s):
            hits = [s]
        else:
            hits = [p for p in glob.glob(s, recursive=True) if os.path.isfile(p)]
            if not hits:
                rejects.append((s, "no such file or folder, and no file matches it as a glob"))
        files.update(os.path.abspath(p) for p in hits if not p.endswith(META_SUFFIX))
    return sorted(files), rejects


def read_response_bytes(path: str) -> bytes:
    """The response's bytes (gunzipped for .gz)."""
    with open(path, "rb") as fh:
        data = fh.read()
    if path.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise InvalidResponse(f"not a readable gzip file ({e})") from None
    return data


def content_id(data: bytes) -> str:
    """The analysis id: the first 128 bits of the SHA-256 of the response's bytes."""
    return hashlib.sha256(data).hexdigest()[:32]


def sidecar(path: str) -> dict:
    """The archive envelope written by `skintrack analyze` next to a response, if any."""
    meta = path[: -len(".json")] + META_SUFFIX if path.endswith(".json") else None
    if meta and os.path.exists(meta):
        try:
            return orjson.loads(Path(meta).read_bytes())
        except orjson.JSONDecodeError:
            return {}
    return {}


def _decode_map(study: Path, aid: str, name: str, data: str, writes: list) -> dict:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidResponse(f"face map {name}: not valid base64 ({e})") from None
    media, ext = _MEDIA.get(raw[:2], ("application/octet-stream", "bin"))
    try:
        width, height = Image.open(io.BytesIO(raw)).size
    except Exception:  # noqa: BLE001 - any undecodable image is reported as such
        raise InvalidResponse(f"face map {name}: not a JPEG or PNG image") from None
    rel = f"maps/{aid}/{name}.{ext}"
    writes.append(_writer().submit(store.write_atomic, study / rel, raw))  # fsync overlaps with parsing
    return {"name": name, "path": rel, "media_type": media, "width": width, "height": height, "bytes": len(raw)}


_KNOWN_IDS: set = set()
_WRITERS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}


def _writer() -> concurrent.futures.ThreadPoolExecutor:
    """This process's map-writing threads (a forked worker cannot use its parent's)."""
    pid = os.getpid()
    if pid not in _WRITERS:
        _WRITERS[pid] = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="skintrack-maps")
    return _WRITERS[pid]


def _init_worker(ids):
    global _KNOWN_IDS
    _KNOWN_IDS = ids


def stage_chunk(study: str, paths: list[str], known_ids=None) -> dict:
    """Read, flatten and stage one chunk of files as a batch in .staging (not yet visible).

    Returns {"batch": id or None, "accepted": [(source, id, photo)], "duplicates": [...], "rejects": [...]}.
    The cyclic garbage collector is paused meanwhile: parsing allocates millions of acyclic objects, and
    its repeated scans of the chunk's live rows doubled the parse time (reference counting frees them).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _stage_chunk(Path(study), paths, known_ids)
    finally:
        if enabled:
            gc.enable()


def _stage_chunk(study: Path, paths: list[str], known_ids) -> dict:
    known = _KNOWN_IDS if known_ids is None else known_ids
    rows = {t: [] for t in TABLES}
    out = {"accepted": [], "duplicates": [], "rejects": [], "batch": None}
    now = dt.datetime.now(dt.timezone.utc)
    seen, writes = set(), []
    for path in paths:
        try:
            st = os.stat(path)
            data = read_response_bytes(path)
            aid = content_id(data)
            meta = sidecar(path)
            photo = meta.get("photo")
            source = {"source": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "analysis_id": aid}
            if aid in known or aid in seen:
                out["duplicates"].append((path, aid, photo))
                rows["sources"].append(source)
                continue
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError as e:
                raise InvalidResponse(f"not valid JSON ({e})") from None
            flat = flatten(doc)
            maps = [_decode_map(study, aid, m["name"], m["data"], writes) for m in flat["maps"]]
        except (InvalidInput, OSError) as e:
            out["rejects"].append((path, str(e)))
            rows["rejects"].append({"source": path, "reason": str(e), "at": now})
            continue
        seen.add(aid)
        flat["maps"] = maps
        flat["analyses"][0].update(source=path, photo=photo, photo_sha256=meta.get("photo_sha256"), ingested_at=now)
        for table, trows in flat.items():
            for r in trows:
                r["analysis_id"] = aid
            rows[table].extend(trows)
        rows["sources"].append(source)
        out["accepted"].append((path, aid, photo))
    for w in writes:  # every map is on disk before the batch that lists it can be published
        w.result()
    if any(rows.values()):
        bid = store.batch_id(sorted(r["source"] + str(r.get("analysis_id")) for r in rows["sources"] + rows["rejects"]))
        tables = _to_arrow(rows, out, now)
        store.stage_batch(study / ".staging" / bid, tables)
        out["batch"] = bid
    return out


def _to_arrow(rows: dict[str, list], out: dict, now) -> dict[str, pa.Table]:
    """Rows to Arrow tables. Arrow checks every number; if a chunk fails, each analysis is converted
    alone so that only the offending responses are rejected (with the reason), the rest kept."""
    try:
        return {t: pa.Table.from_pylist(r, schema=TABLES[t]) for t, r in rows.items()}
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    bad = {}
    for table in ("detections", "outlines"):
        for r in rows[table]:
            try:
                pa.Table.from_pylist([r], schema=TABLES[table])
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                bad.setdefault(r["analysis_id"], f"{table} {r['kind']} #{r['idx']}: a point is not {{x, y}} numbers ({e})")
    by_id = {a: s for s, a, _ in out["accepted"]}
    for aid, reason in bad.items():
        out["rejects"].append((by_id[aid], reason))
        rows["rejects"].append({"source": by_id[aid], "reason": reason, "at": now})
    out["accepted"] = [a for a in out["accepted"] if a[1] not in bad]
    rows["sources"] = [r for r in rows["sources"] if r["analysis_id"] not in bad]
    for t, r in rows.items():
        if t not in ("sources", "rejects"):
            rows[t] = [x for x in r if x["analysis_id"] not in bad]
    return {t: pa.Table.from_pylist(r, schema=TABLES[t]) for t, r in rows.items()}


def _session_rows(manifest: Manifest, inputs: list[tuple[str, str, str]]) -> list[dict]:
    now = dt.datetime.now(dt.timezone.utc)
    out = []
    for source, aid, photo in inputs:
        row = manifest.match(source, photo)
        if row is None:
            continue
        meta = {k: v for k, v in row.items() if k not in ("file", "_line")}
        out.append({"analysis_id": aid, **{k: meta.pop(k, None) for k in ("subject_id", "visit", "taken_at")},
                    **meta, "assigned_at": now})
    return out


def ingest(sources, study, manifest=None, subjects=None, workers: int = 1, progress: bool = False,
           chunk_size: int = CHUNK) -> IngestReport:
    """Ingest response files (files, folders, globs, or the study's raw/ archive) into the study at `study`.

    Rejected inputs are listed in the report and in the `rejects` table; the rest is ingested.
    """
    t0 = time.perf_counter()
    study = Path(study)
    report = IngestReport()
    man = Manifest.read(manifest) if manifest else None
    subj = read_subjects(subjects) if subjects else None
    files, missing = expand(sources)
    report.rejected += missing
    with store.locked(study):
        index = store.read_table(study, "sources")
        index = {} if index is None else {s: (z, m, a) for s, z, m, a in zip(*index.to_pydict().values())}
        ids = store.read_table(study, "analyses", ["analysis_id"])
        known_ids = set() if ids is None else set(ids.column("analysis_id").to_pylist())
        inputs, todo = [], []
        for path in files:
            hit = index.get(path)
            st = os.stat(path)
            if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns and hit[2] in known_ids:
                photo = sidecar(path).get("photo") if man else None  # only a manifest matches by photo
                inputs.append((path, hit[2], photo))
                report.skipped += 1
            else:
                todo.append(path)
        if workers > 1:  # about eight chunks per worker, so that no worker is left with the long tail
            chunk_size = max(10, min(chunk_size, -(-len(todo) // (workers * 8))))
        chunks = _chunks(todo, chunk_size)
        bar = tqdm(total=len(todo), unit="file", desc="ingest", disable=not progress or not todo)
        committed = set(known_ids)

        def commit(res):
            dup = {aid for _, aid, _ in res["accepted"]} & committed
            if dup:  # the same response in two chunks of this run: keep the first
                store.drop_ids(study / ".staging" / res["batch"], dup)
                res["duplicates"] += [a for a in res["accepted"] if a[1] in dup]
                res["accepted"] = [a for a in res["accepted"] if a[1] not in dup]
            if res["batch"]:
                store.publish(study, res["batch"])
            committed.update(aid for _, aid, _ in res["accepted"])
            report.added += len(res["accepted"])
            report.skipped += len(res["duplicates"])
            report.rejected += res["rejects"]
            inputs.extend(res["accepted"] + res["duplicates"])
            bar.update(len(res["accepted"]) + len(res["duplicates"]) + len(res["rejects"]))

        if workers > 1 and len(chunks) > 1:
            with concurrent.futures.ProcessPoolExecutor(workers, initializer=_init_worker,
                                                        initargs=(known_ids,)) as pool:
                for res in pool.map(stage_chunk, [str(study)] * len(chunks), chunks):
                    commit(res)
        else:
            for chunk in chunks:
                commit(stage_chunk(str(study), chunk, known_ids))
        bar.close()
        extra = _metadata_batch(study, man, subj, inputs, report)
        if extra:
            store.write_batch(study, store.batch_id(sorted(map(str, extra.items()))), extra)
    report.seconds = time.perf_counter() - t0
    return report


def _chunks(paths: list[str], most: int, most_bytes: int = CHUNK_BYTES) -> list[list[str]]:
    """Split into chunks of at most `most` files and about `most_bytes` of input (memory stays flat)."""
    chunks, current, size = [], [], 0
    for p in paths:
        n = os.path.getsize(p)
        if current and (len(current) >= most or size + n > most_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(p)
        size += n
    return chunks + [current] if current else chunks


def _metadata_batch(study: Path, man, subj, inputs, report) -> dict[str, pa.Table]:
    """Sessions, subjects and CSV rejects that differ from what the study already holds."""
    now = dt.datetime.now(dt.timezone.utc)
    tables, rejects = {}, []
    if man is not None:
        rejects += man.rejects
        sessions = _session_rows(man, inputs)
        for source, _ in report.rejected:  # their rows are not "missing": the input itself was rejected
            man.match(source)
        rejects += man.unmatched_missing()
        sessions = store.changed_rows(study, "sessions", "analysis_id", sessions)
        if sessions:
            extra = [(k, pa.string()) for k in sessions[0] if k not in SESSION_TYPES]
            tables["sessions"] = pa.Table.from_pylist(sessions, schema=pa.schema(list(SESSION_TYPES.items()) + extra))
        report.sessions = len(sessions)
    if subj is not None:
        df, subj_rejects = subj
        rejects += subj_rejects
        rows = store.changed_rows(study, "subjects", "subject_id", df.to_dict("records"))
        if rows:
            tables["subjects"] = pa.Table.from_pylist([dict(r, assigned_at=now) for r in rows])
        report.subjects = len(rows)
    if rejects:
        report.rejected += rejects
        tables["rejects"] = pa.Table.from_pylist([{"source": s, "reason": r, "at": now} for s, r in rejects],
                                                 schema=TABLES["rejects"])
    return tables

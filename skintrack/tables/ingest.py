"""Ingest responses into a study: parse, flatten, decode maps, and commit them to the lake.

An ingest is one transaction (a long one commits every `commit_every` analyses, so that a crash loses
at most that much): every table changes together, as one new version. Re-ingesting is a no-op (files
already seen are looked up by path, size and time, responses by their content hash), so adding k
responses to a study of N costs time in proportion to k, not N.

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
import multiprocessing
import os
import random
import stat
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
from PIL import Image
from tqdm.auto import tqdm

from . import generations, keys, measures as measures_, session_index, store, versions
from ..errors import InvalidInput, InvalidResponse, whole
from .codes import about_photo
from .flatten import flatten
from .manifest import Manifest, read_subjects, session_problems
from .schema import TABLES
from .upgrade import upgrade_locked

CHUNK = 200
CONFLICT_RETRIES = 5  # a shared study: times to redo an ingest whose commit lost to another machine's
COMMIT_EVERY = 20_000  # analyses per commit of a long ingest (a crash loses at most these)
CHUNK_BYTES = 48 * 2**20
SESSION_TYPES = {"analysis_id": pa.string(), "subject_id": pa.string(), "visit": pa.string(),
                 "taken_at": pa.timestamp("us"), "assigned_at": pa.timestamp("us", tz="UTC")}
META_SUFFIX = ".meta.json"
MAX_RESPONSE_BYTES = 256 * 2**20  # the largest real response, every map included, is under 10 MiB
_MEDIA = {b"\xff\xd8": ("image/jpeg", "jpg"), b"\x89P": ("image/png", "png")}
# the byte order marks of a response saved in another encoding (UTF-32's before UTF-16's, which begin them)
BOMS = {b"\xef\xbb\xbf": "UTF-8", b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32",
        b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


@dataclass
class IngestReport:
    """What one ingest did: counts, the rejected inputs with reasons, and how long it took."""

    added: int = 0
    skipped: int = 0
    sessions: int = 0
    subjects: int = 0
    measures: int = 0  # readings written (new or changed)
    rejected: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.rejected


def expand(sources) -> tuple[list[str], list[tuple[str, str]]]:
    """Turn files, folders (recursive) and globs into a sorted list of response files, plus rejects.

    A path that exists is always taken literally (``trial[1]`` is that folder, never a pattern); only a
    source that does not exist is read as a glob. Folders are walked without following links to folders
    (a link loop cannot multiply files), each file is taken once however many links lead to it, and
    anything but a regular file (a FIFO, a device, a dangling link, a name that is not UTF-8) is rejected
    with the reason.
    """
    candidates, rejects = [], []
    for s in map(str, sources):
        if os.path.lexists(s):
            candidates += _walk_folder(s) if os.path.isdir(s) else [s]
        else:
            hits = glob.glob(s, recursive=True)
            if not hits:
                rejects.append((s, "no such file or folder, and no file matches it as a glob"))
            for hit in hits:
                candidates += _walk_folder(hit) if os.path.isdir(hit) else [hit]
    files, seen = [], set()
    for path in candidates:
        path = os.path.abspath(path)
        st, reason = _regular_file(path)
        if reason:
            rejects.append((_printable(path), reason))
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            files.append(path)
    return sorted(files), rejects


def _walk_folder(folder: str) -> list[str]:
    """The response files under a folder; hidden folders (raw/.uncertain, .ipynb_checkpoints) are skipped."""
    out = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [os.path.join(root, n) for n in names
                if (n.endswith(".json") or n.endswith(".json.gz")) and not n.endswith(META_SUFFIX)]
    return out


def _printable(path: str) -> str:
    """A path as text that can be stored and printed (bytes that are not UTF-8 shown as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _regular_file(path: str) -> tuple[os.stat_result | None, str | None]:
    """(its stat, None) for a regular file with a UTF-8 name, else (None, why it cannot be read)."""
    if _printable(path) != path:
        return None, "the file name is not valid UTF-8; rename it"
    try:
        st = os.stat(path)
    except OSError as e:
        if os.path.islink(path):
            return None, f"a symbolic link that leads nowhere ({e.strerror})"
        return None, e.strerror
    if not stat.S_ISREG(st.st_mode):
        return None, "not a regular file (a FIFO, device or socket); skipped"
    return st, None


def read_response_bytes(path: str, most: int = MAX_RESPONSE_BYTES) -> bytes:
    """The response's bytes (gunzipped for .gz), refusing more than `most` bytes (a gzip bomb stops early)."""
    with open(path, "rb") as fh:
        if path.endswith(".gz"):
            try:
                with gzip.GzipFile(fileobj=fh) as gz:
                    data = gz.read(most + 1)
            except (OSError, EOFError, zlib.error) as e:
                raise InvalidResponse(f"not a readable gzip file ({e})") from None
        else:
            data = fh.read(most + 1)
    if len(data) > most:
        raise InvalidResponse(f"larger than {most // 2**20} MiB{' once decompressed' if path.endswith('.gz') else ''}; "
                              "no response is that large")
    return data


def content_id(data: bytes) -> str:
    """The analysis id: the first 128 bits of the SHA-256 of the response's bytes."""
    return hashlib.sha256(data).hexdigest()[:32]


def sidecar(path: str) -> tuple[dict, str | None]:
    """The archive envelope written by `skintrack analyze` next to a response, if any, and what is wrong
    with it (a malformed envelope is ignored, and said, but never stops its response)."""
    meta = path[: -len(".json")] + META_SUFFIX if path.endswith(".json") else None
    if not meta or not os.path.exists(meta):
        return {}, None
    try:
        doc = orjson.loads(read_response_bytes(meta))
    except (orjson.JSONDecodeError, InvalidResponse, OSError) as e:
        return {}, f"archive envelope is not readable JSON ({e}); ignored, its response is ingested"
    if not isinstance(doc, dict) or not isinstance(doc.get("photo", ""), str):
        return {}, "archive envelope is not an object with a photo path; ignored, its response is ingested"
    if doc.get("photo") and not os.path.isabs(doc["photo"]):  # a folder moved as a whole: beside its envelope
        doc["photo"] = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(meta)), doc["photo"]))
    return doc, None


def _decode_map(aid: str, name: str, data: str) -> tuple[dict, bytes]:
    """A face map's row and its image bytes, checked (written only once the whole response is)."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidResponse(f"face map {name}: not valid base64 ({e})") from None
    media, ext = _MEDIA.get(raw[:2], ("application/octet-stream", "bin"))
    try:
        width, height = Image.open(io.BytesIO(raw)).size
    except Exception:  # noqa: BLE001 - any undecodable image is reported as such
        raise InvalidResponse(f"face map {name}: not a JPEG or PNG image") from None
    return {"name": name, "path": f"maps/{aid}/{name}.{ext}", "media_type": media, "width": width, "height": height,
            "bytes": len(raw)}, raw


_WRITERS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}


def _writer() -> concurrent.futures.ThreadPoolExecutor:
    """This process's map-writing threads (a forked worker cannot use its parent's)."""
    pid = os.getpid()
    if pid not in _WRITERS:
        _WRITERS[pid] = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="skintrack-maps")
    return _WRITERS[pid]


def _die_with_parent(parent: int) -> None:
    """Make this worker die when its parent does (Linux PR_SET_PDEATHSIG), and at once if the parent
    died before this ran: a killed ingest leaves no worker behind. (Workers are spawned, not forked, so
    none inherits the study's lock; each holds the pool's queue at both ends, so no EOF would end it.)"""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass
    if os.getppid() != parent:
        os._exit(1)


def read_chunk(study: str, paths: list[str]) -> dict:
    """Read and flatten one chunk of files (its face maps are written to the study as they are decoded).

    Returns {"tables": {table: Arrow rows}, "accepted": [(source, id, photo)], "duplicates": [...],
    "rejects": [...]}.
    The cyclic garbage collector is paused meanwhile: parsing allocates millions of acyclic objects, and
    its repeated scans of the chunk's live rows doubled the parse time (reference counting frees them).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _read_chunk(Path(study), paths)
    finally:
        if enabled:
            gc.enable()


def _read_chunk(study: Path, paths: list[str]) -> dict:
    rows = {t: [] for t in TABLES if t not in POINT_TABLES}
    shapes = {t: {} for t in POINT_TABLES}  # table -> analysis id -> its Arrow rows
    out = {"accepted": [], "duplicates": [], "rejects": [], "tables": {}}
    now = dt.datetime.now(dt.timezone.utc)
    seen, writes = set(), []

    def reject(source, reason):
        out["rejects"].append((source, reason))
        rows["rejects"].append({"source": source, "reason": reason, "at": now})

    for path in paths:
        try:
            st = os.stat(path)
            data = read_response_bytes(path)
            aid = content_id(data)
            meta, meta_problem = sidecar(path)
            photo = meta.get("photo")
            source = {"source": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "analysis_id": aid}
            if aid in seen:
                out["duplicates"].append((path, aid, photo))
                rows["sources"].append(source)
                continue
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError as e:
                raise InvalidResponse(f"not valid JSON ({_encoding_said(data) or e})") from None
            flat = flatten(doc)
            _refuse_non_analysis(flat["analyses"][0])
            converted = {t: _point_rows(t, flat.pop(t), aid) for t in POINT_TABLES}
            maps = [_decode_map(aid, m["name"], m["data"]) for m in flat["maps"]]
        except (InvalidInput, OSError) as e:
            reject(path, str(e))
            continue
        except Exception as e:  # noqa: BLE001 - one response must never stop the others
            reject(path, f"could not be flattened ({type(e).__name__}: {e})")
            continue
        if meta_problem:
            reject(path[: -len(".json")] + META_SUFFIX, meta_problem)
        seen.add(aid)
        for row, raw in maps:  # a response refused above leaves no file; the writes overlap the parsing
            writes.append(_writer().submit(store.write_atomic, study / row["path"], raw, study / ".staging"))
        flat["maps"] = [row for row, _ in maps]
        flat["analyses"][0].update(source=path, photo=photo, photo_sha256=meta.get("photo_sha256"), ingested_at=now,
                                   **instrument(doc, meta))
        for table, trows in flat.items():
            for r in trows:
                r["analysis_id"] = aid
            rows[table].extend(trows)
        for table, converted_rows in converted.items():
            shapes[table][aid] = converted_rows
        rows["sources"].append(source)
        out["accepted"].append((path, aid, photo))
    for w in writes:  # every map is on disk before the commit that lists it
        w.result()
    tables = _to_arrow(rows, shapes, out, reject)
    out["tables"] = {t: keys.with_keys(r) if t in keys.KEYED else r for t, r in tables.items()}
    return out  # (with their keys: a Spark executor writes these tables to files as they are)


def instrument(doc: dict, meta: dict) -> dict:
    """The analyses columns about the instrument: the API generation (from the response's shape and the
    envelope's call date), and, for a call `analyze` made, its batch and whether it was a sentinel."""
    called = meta.get("started_at") or meta.get("archived_at")
    gen = generations.infer(doc, called)
    try:
        called_at = dt.datetime.fromisoformat(called) if isinstance(called, str) else None
    except ValueError:
        called_at = None
    sentinel = meta.get("sentinel") if isinstance(meta.get("sentinel"), dict) else {}
    return {"api_generation": gen.name, "api_generation_basis": gen.basis, "called_at": called_at,
            "batch": meta.get("batch") if isinstance(meta.get("batch"), str) else None,
            "sentinel": sentinel.get("name"), "batch_position": sentinel.get("position")}


def backfill_generations(con) -> int:
    """Give the analyses an older skintrack ingested their API generation, read again from their source
    files (one version; an analysis whose file is gone is `unknown`, and says why). Returns how many."""
    rows = con.execute(f"SELECT analysis_id, source FROM {store.LAKE}.main.analyses WHERE api_generation IS NULL"
                       ).fetchall()
    if not rows:
        return 0
    filled = []
    for aid, source in rows:
        try:
            values = instrument(orjson.loads(read_response_bytes(source)), sidecar(source)[0])
        except (OSError, InvalidResponse, orjson.JSONDecodeError, TypeError):
            values = {"api_generation": generations.UNKNOWN, "api_generation_basis": "ingested before skintrack "
                      "recorded generations, and its source file can no longer be read", "called_at": None,
                      "batch": None, "sentinel": None, "batch_position": None}
        filled.append({"analysis_id": aid, **values})
    con.register("_filled", pa.Table.from_pylist(filled, schema=pa.schema([TABLES["analyses"].field(k) for k in filled[0]])))
    with store.transaction(con, "upgrade", {"api generation recorded": len(filled)}):
        con.execute(f"UPDATE {store.LAKE}.main.analyses a SET api_generation = f.api_generation, "
                    "api_generation_basis = f.api_generation_basis, called_at = f.called_at, batch = f.batch, "
                    "sentinel = f.sentinel, batch_position = f.batch_position FROM _filled f "
                    "WHERE a.analysis_id = f.analysis_id")
    con.unregister("_filled")
    return len(filled)


def _refuse_non_analysis(row: dict) -> None:
    """A failure that is not about the photo (a refused key, no credits, a service error) is no analysis."""
    if row.get("ok"):
        return
    code = row.get("error_status") or row.get("error_code_str")
    status = row.get("http_status") or row.get("error_code")
    if not about_photo(code, status):
        raise InvalidResponse(f"the API refused the call for the account, key, request or service "
                              f"({code or f'HTTP {status}'}), not for the photo: no analysis to ingest; run "
                              "analyze again once that is fixed")


POINT_TABLES = ("detections", "outlines")  # the rows that hold a response's point lists, 3,200 points each


def _point_rows(table: str, rows: list[dict], aid: str) -> pa.Table:
    """A response's rows of a table of points, converted to Arrow as soon as it is flattened, while its parsed
    document is in the processor's cache, which frees the document's point objects at once (converted a chunk
    at a time, benchmarks/ingest.py's 2,000 responses took 8% more CPU and 670 MiB at peak instead of 480).
    A value Arrow cannot hold (a whole number beyond a double's exact range) rejects the response."""
    for r in rows:
        r["analysis_id"] = aid
    try:
        return pa.Table.from_pylist(rows, schema=TABLES[table])
    except Exception as e:  # noqa: BLE001 - the response is rejected, the others go on
        raise InvalidResponse(_misfit(table, e)) from None


def _misfit(table: str, e: Exception) -> str:
    return f"{table}: a value does not fit its column ({type(e).__name__}: {e})"


def _to_arrow(rows: dict[str, list], shapes: dict[str, dict], out: dict, reject) -> dict[str, pa.Table]:
    """Rows to Arrow tables, the point tables (`shapes`: table -> analysis id -> Arrow rows) converted already.
    Arrow checks every value again; if a chunk fails, each analysis is converted alone so that only the
    offending responses are rejected (with the table and column), the rest kept."""
    try:
        tables = {t: pa.Table.from_pylist(r, schema=TABLES[t]) for t, r in rows.items()}
    except Exception:  # noqa: BLE001 - found and named per analysis
        _reject_misfits(rows, shapes, out, reject)
        tables = {t: pa.Table.from_pylist(r, schema=TABLES[t]) for t, r in rows.items()}
    for t, per in shapes.items():
        tables[t] = pa.concat_tables([TABLES[t].empty_table(), *per.values()])
    return {t: tables[t] for t in TABLES}


def _reject_misfits(rows: dict[str, list], shapes: dict[str, dict], out: dict, reject) -> None:
    """Reject the analyses with a value their table's column cannot hold, and drop all their rows."""
    bad = {}
    for table, trows in rows.items():
        if table in ("sources", "rejects"):
            continue
        for r in trows:
            if r["analysis_id"] in bad:
                continue
            try:
                pa.Table.from_pylist([r], schema=TABLES[table])
            except Exception as e:  # noqa: BLE001
                bad[r["analysis_id"]] = _misfit(table, e)
    by_id = {a: s for s, a, _ in out["accepted"]}
    for aid, reason in bad.items():
        reject(by_id[aid], reason)
    out["accepted"] = [a for a in out["accepted"] if a[1] not in bad]
    for t, r in rows.items():
        if t != "rejects":
            rows[t] = [x for x in r if x.get("analysis_id") not in bad]
    for per in shapes.values():
        for aid in bad:
            per.pop(aid, None)


def _session_rows(manifest: Manifest, inputs: list[tuple[str, str, str]]) -> list[dict]:
    now = dt.datetime.now(dt.timezone.utc)
    out = []
    for source, aid, photo in inputs:
        row = manifest.match(source, photo)
        if row is None:
            continue
        meta = {k: None if pd.isna(v) else v for k, v in row.items() if k not in ("file", "_line")}  # an empty cell
        out.append({"analysis_id": aid, **{k: meta.pop(k, None) for k in ("subject_id", "visit", "taken_at")},
                    **meta, "assigned_at": now, "_where": f"{manifest.path}:{row['_line']}"})
    return out


def _checked_sessions(sessions: list[dict], known_subjects: set, visit_uses: dict, report) -> tuple[list[dict], list]:
    """Drop the manifest rows that cannot be right (see `manifest.session_problems`); warn of the doubtful.
    `visit_uses` counts the study's other sessions per visit label."""
    rejects, warnings = session_problems(sessions, known_subjects, visit_uses)
    report.warnings += warnings
    bad = {where for where, _ in rejects}
    return [{k: v for k, v in r.items() if k != "_where"} for r in sessions if r["_where"] not in bad], rejects


def ingest(sources, study, manifest=None, subjects=None, workers: int = 1, progress: bool = False,
           chunk_size: int = CHUNK, commit_every: int = COMMIT_EVERY, measures=None,
           measures_catalog=None) -> IngestReport:
    """Ingest response files (files, folders, globs, or the study's raw/ archive) into the study at `study`.

    `manifest` is a CSV path (or a `Manifest` already read and matched, as `analyze` passes it).
    `measures` is a measures CSV and `measures_catalog` a TOML file declaring them
    (`skintrack.tables.measures`; the catalog is kept in the study, and later measures are checked against
    the one kept). Rejected inputs are listed in the report and in the `rejects` table; the rest is ingested.
    """
    t0 = time.perf_counter()
    workers = whole(workers, "workers")
    chunk_size = whole(chunk_size, "the batch size (files per chunk)")
    commit_every = whole(commit_every, "commit_every (analyses per commit)")
    study = Path(study)
    man = manifest if isinstance(manifest, Manifest) else Manifest.read(manifest) if manifest else None
    subj = read_subjects(subjects) if subjects else None
    # every CSV is read before any response: a file that cannot be used at all is said first, and costs nothing
    meas = (measures, measures_.read_csv(measures) if measures else None,
            measures_.read_catalog(measures_catalog) if measures_catalog else None)
    files, unreadable = expand(sources or [])
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            with store.locked(study):
                report = _ingest_locked(study, files, unreadable, man, subj, meas, workers, progress, chunk_size,
                                        commit_every)
            break
        except duckdb.Error as e:  # another machine committed first to a shared study, or readers kept it busy
            if not ("conflict" in str(e) or store.is_busy(e)) or attempt == CONFLICT_RETRIES:
                raise store.damaged(study, e, writing=True) from None
            time.sleep(random.uniform(0.2, 1.0) * 2 ** attempt)
    report.seconds = time.perf_counter() - t0
    return report


def _ingest_locked(study, files, unreadable, man, subj, meas, workers, progress, chunk_size, commit_every) -> IngestReport:
    """The ingest proper, under the study's write lock. A transaction that conflicts with another
    machine's commit (a shared study) is rolled back whole and raised, for `ingest` to try again."""
    report = IngestReport()
    if store.is_old_layout(study):
        upgrade_locked(study)
    con = store.connect(study, write=True)
    backfill_generations(con)
    inputs, todo = split_seen(con, files, man is not None)
    report.skipped = len(inputs)
    if workers > 1:  # about eight chunks per worker, so that no worker is left with the long tail
        chunk_size = max(10, min(chunk_size, -(-len(todo) // (workers * 8))))
    chunks = _chunks(todo, chunk_size)
    bar = tqdm(total=len(todo), unit="file", desc="ingest", disable=not progress or not todo)
    part = Part(con, report)
    try:
        for res in _read_all(study, chunks, workers):
            part.add(res)
            inputs.extend(res["accepted"] + res["duplicates"])
            bar.update(len(res["accepted"]) + len(res["duplicates"]) + len(res["rejects"]))
            if part.added >= commit_every:
                part.commit()
        bar.close()
        add_metadata(con, man, subj, meas, inputs, report, unreadable, part)
        part.commit(last=True)
    except BaseException:
        store.rollback(con)
        con.close()
        raise
    versions.compact_if_needed(con, study)
    con.close()
    return report


def split_seen(con, files: list[str], with_photos: bool) -> tuple[list, list]:
    """([(path, analysis_id, photo)] of the files ingested before in this very state, [the other paths]).
    Only a manifest matches by photo, so only `with_photos` reads the archive envelopes."""
    seen = store.seen_sources(con, [(p, st.st_size, st.st_mtime_ns) for p, st in ((p, os.stat(p)) for p in files)])
    inputs = [(p, seen[p], sidecar(p)[0].get("photo") if with_photos else None) for p in files if p in seen]
    return inputs, [p for p in files if p not in seen]


def _read_all(study: Path, chunks: list[list[str]], workers: int):
    """Each chunk read and flattened, in order: in this process, or in `workers` spawned processes."""
    if workers > 1 and len(chunks) > 1:
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn, initializer=_die_with_parent,
                                                    initargs=(os.getpid(),)) as pool:
            yield from pool.map(read_chunk, [str(study)] * len(chunks), chunks)
    else:
        for chunk in chunks:
            yield read_chunk(str(study), chunk)


class Part:
    """The open transaction of an ingest: chunks are written into it as they come, and it commits as one
    version (a long ingest commits every `commit_every` analyses and opens the next part)."""

    def __init__(self, con, report: IngestReport):
        self.con, self.report, self.number = con, report, 0
        self.ids: set = set()  # analyses added by this ingest so far
        self._open()

    def _open(self):
        self.number += 1
        self.added = 0
        self.info = {"analyses added": 0, "part": self.number if self.number > 1 else None}
        self.con.execute("BEGIN TRANSACTION")

    def add(self, res: dict) -> None:
        """Write one chunk, leaving out the analyses the study (or this ingest) holds already."""
        ids = [aid for _, aid, _ in res["accepted"]]
        dup = (store.held(self.con, ids) | self.ids) & set(ids)
        if dup:
            res["duplicates"] += [a for a in res["accepted"] if a[1] in dup]
            res["accepted"] = [a for a in res["accepted"] if a[1] not in dup]
        keep = pa.array(sorted(dup), pa.string())
        for table, rows in res["tables"].items():
            if dup and table not in ("sources", "rejects"):
                rows = rows.filter(pa.compute.invert(pa.compute.is_in(rows["analysis_id"], keep)))
            store.insert(self.con, table, rows)
        self.ids.update(ids)
        self.added += len(res["accepted"])
        self.info["analyses added"] += len(res["accepted"])
        self.report.added += len(res["accepted"])
        self.report.skipped += len(res["duplicates"])
        self.report.rejected += res["rejects"]

    def commit(self, last: bool = False) -> None:
        self.info["rejected"] = len(self.report.rejected)
        store.commit(self.con, "ingest", self.info)
        if not last:
            self._open()


def _encoding_said(data: bytes) -> str | None:
    """Why a file that may well hold a response is not JSON as the API sends it (UTF-8 without a byte order
    mark), when it was saved in another encoding (an editor, PowerShell's Out-File); None otherwise.

    >>> _encoding_said(bytes.fromhex("efbbbf") + b"{}")
    'the file starts with a UTF-8 byte order mark; the API sends UTF-8 without one: save the response as it came'
    """
    for mark, name in BOMS.items():
        if data.startswith(mark):
            return (f"the file starts with a {name} byte order mark; the API sends UTF-8 without one: save the "
                    "response as it came")
    if b"\x00" in data[:4]:
        return "the file is UTF-16 or UTF-32 text; the API sends UTF-8: save the response as it came"
    return None


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


def add_metadata(con, man, subj, meas, inputs, report, unreadable, part: Part) -> None:
    """Write the sessions, subjects and measures that differ from what the study holds (and the session
    index of the subjects they touch), and the rejects of the CSVs and of the sources that could not be
    read as files. `meas` is (measures CSV, its `measures.read_csv`, catalog), or None."""
    now = dt.datetime.now(dt.timezone.utc)
    rejects = list(unreadable)
    measures, read, catalog = meas or (None, None, None)
    known = {r[0] for r in con.execute(f"SELECT subject_id FROM {store.LAKE}.main.subjects").fetchall()} \
        if man is not None or subj is not None or measures is not None else set()
    touched = set()
    if subj is not None:
        df, subj_rejects = subj
        rejects += subj_rejects
        rows = [{k: None if pd.isna(v) else v for k, v in r.items()} for r in df.to_dict("records")]  # empty: no value
        rows = store.changed_rows(store.current_rows(con, "subjects", "subject_id", [r["subject_id"] for r in rows]),
                                  "subject_id", rows)
        if rows:
            store.replace(con, "subjects", pa.Table.from_pylist([dict(r, assigned_at=now) for r in rows]))
        report.subjects = len(rows)
        known |= set(df["subject_id"])
    if man is not None:
        rejects += man.rejects
        sentinels = {r[0] for r in con.execute(f"SELECT analysis_id FROM {store.LAKE}.main.analyses WHERE sentinel IS "
                                               "NOT NULL AND analysis_id IN (SELECT unnest(?))",
                                               [[i[1] for i in inputs]]).fetchall()}
        sessions = _session_rows(man, [i for i in inputs if i[1] not in sentinels])  # never a subject's value
        for source, _ in report.rejected + unreadable:  # not "missing": the input itself was rejected
            man.match(source)
        rejects += man.unmatched_missing()
        mine = [r["analysis_id"] for r in sessions]
        uses = dict(con.execute(f"SELECT visit, count(*) FROM {store.LAKE}.main.sessions WHERE visit IS NOT NULL "
                                "AND analysis_id NOT IN (SELECT unnest(?)) GROUP BY visit", [mine]).fetchall())
        sessions, problems = _checked_sessions(sessions, known, uses, report)
        rejects += problems
        stored = store.current_rows(con, "sessions", "analysis_id", [r["analysis_id"] for r in sessions])
        sessions = store.changed_rows(stored, "analysis_id", sessions)
        if sessions:
            extra = [(k, pa.string()) for k in sessions[0] if k not in SESSION_TYPES]
            store.replace(con, "sessions",
                          pa.Table.from_pylist(sessions, schema=pa.schema(list(SESSION_TYPES.items()) + extra)))
            touched = {r["subject_id"] for r in sessions} | {stored[r["analysis_id"]]["subject_id"]
                                                               for r in sessions if r["analysis_id"] in stored}
        report.sessions = len(sessions)
    if measures is not None or catalog is not None:
        measure_rejects, measured = add_measures(con, measures, read, catalog, known, report, now)
        rejects += measure_rejects
        touched |= measured
    session_index.update(con, touched)
    if rejects:
        report.rejected += rejects
        store.insert(con, "rejects", pa.Table.from_pylist([{"source": s, "reason": r, "at": now} for s, r in rejects],
                                                          schema=TABLES["rejects"]))
    part.info.update({"sessions assigned": report.sessions, "subjects": report.subjects, "measures": report.measures})


def add_measures(con, path, read, catalog, known: set, report, now) -> tuple[list, set]:
    """Keep a new measures catalog (`catalog`: (text, declarations), or None) and write the readings of the
    measures CSV at `path` (or None; `read`: its `measures.read_csv`) that differ from the stored ones. Returns
    (rejects, subjects touched)."""
    if catalog is not None and catalog[0] != store.plan_text(con, None, "measure_catalogs"):
        store.insert(con, "measure_catalogs", pa.table({"text": [catalog[0]], "saved_at": [now]},
                                                       schema=store.BASE["measure_catalogs"]))
    if path is None:
        return [], set()
    declared = catalog[1] if catalog is not None else measures_.parse_catalog(
        store.plan_text(con, None, "measure_catalogs"), "the study's measures catalog", given=False)
    rows, rejects = measures_.read_measures(path, declared, read)
    if known:
        unknown = ~rows["subject_id"].isin(known)
        rejects += [(f"{path}:{src.rsplit(':', 1)[1]}", f"subject_id {s} is not in the study's subjects")
                    for src, s in zip(rows.loc[unknown, "source"], rows.loc[unknown, "subject_id"])]
        rows = rows[~unknown]
    for name in sorted(set(rows["measure"]) - set(declared)):
        report.warnings.append((str(path), f"measure {name} has no declaration in the measures catalog: taken as "
                                           "continuous (declare it with --measures-catalog)"))
    records = [{k: None if v is None or v is pd.NaT or (isinstance(v, float) and v != v) else v for k, v in r.items()}
               for r in rows.to_dict("records")]
    stored = store.current_rows(con, "measures", "reading_id", [r["reading_id"] for r in records])
    changed = {r["reading_id"] for r in store.changed_rows(  # where a reading sits in the file is not a change
        stored, "reading_id", [{k: v for k, v in r.items() if k != "source"} for r in records])}
    records = [r for r in records if r["reading_id"] in changed]
    if records:
        store.replace(con, "measures", pa.Table.from_pylist([dict(r, assigned_at=now) for r in records],
                                                            schema=store.BASE["measures"]))
    report.measures = len(records)
    return rejects, {r["subject_id"] for r in records}

"""What a read-only command printed and wrote, kept per study version: the same command on the same data
answers again at once (the `skintrack` commands that compute, `skintrack.cli`; and a large metric's records,
`skintrack.analysis.study`).

A command's output depends only on its options, the study's data at one version, its plan and the code that
computes it, so `key` hashes all of them:

- the command and its options (an output folder included);
- the study folder, and its catalog's row of the version read: number and commit time to the microsecond
  (a study deleted and ingested again has other times);
- the size and change time of every data file of the lake (a file changed behind the catalog's back);
- `plan.toml` as it is now (an edit counts before the study keeps it as a version);
- the code: every file of the skintrack package, where and when each library it computes with was
  installed, and the Python version; the date, for a command that prints it (the report).

A study whose catalog is shared (`store.toml`) or cannot be read is never kept. Entries live in
`$SKINTRACK_CACHE` (default `$XDG_CACHE_HOME/skintrack` or `~/.cache/skintrack`; `off` keeps nothing), one
folder per key holding `stdout` and the files written. An entry is made under a temporary name and renamed
into place, so a crash never leaves half of one; it is kept only when the key is the same after the run as
before it (nothing committed meanwhile). The least recently used go above `LIMIT_BYTES`.

Example
-------
>>> import tempfile
>>> from unittest import mock
>>> from skintrack.demo import demo_study
>>> study = demo_study().path
>>> with mock.patch.dict(os.environ, {"SKINTRACK_CACHE": tempfile.mkdtemp()}):
...     k = key("endpoints", {"fmt": None}, study)
...     first = replay(k)
...     keep(k, "the table\\n")
...     (first, replay(k), k == key("endpoints", {"fmt": "csv"}, study))
(None, 'the table\\n', False)
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

from .tables.layout import CATALOG, CONFIG, DATA, PLAN, cache_dir

LIMIT_BYTES = 1 << 30
LIBRARIES = ("numpy", "scipy", "pandas", "duckdb", "pyarrow", "matplotlib", "statsmodels", "jinja2", "docx", "PIL",
             "markupsafe", "pyreadstat", "xlsxwriter", "lxml")
STDOUT = "stdout"
FILES = "files"


@functools.cache
def code_fingerprint() -> str:
    """A hash of skintrack's own files and of the libraries' installed places and times (an upgrade of either
    changes it)."""
    h = hashlib.sha256(sys.version.encode())
    package = Path(__file__).parent
    for path in sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    for name in LIBRARIES:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        stat = os.stat(origin) if origin and os.path.exists(origin) else None
        h.update(f"{name}={origin}:{stat and (stat.st_size, stat.st_mtime_ns)}".encode())
    return h.hexdigest()


def _snapshot(study: Path, version: int | None):
    """The catalog's row of `version` (else the newest), or None when it cannot be read."""
    if (study / CONFIG).exists() or not (study / CATALOG).is_file():
        return None
    try:
        con = sqlite3.connect(f"{(study / CATALOG).resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            where, args = ("WHERE snapshot_id = ?", [version]) if version is not None else ("", [])
            row = con.execute(f"SELECT snapshot_id, snapshot_time FROM ducklake_snapshot {where} "
                              "ORDER BY snapshot_id DESC LIMIT 1", args).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return list(row) if row else None


def listing(folder) -> dict:
    """Relative path -> [size, change time in ns] of every file under `folder` (none when it is None or
    missing): a lake's data files, or what an output folder held before a command wrote into it."""
    out = {}
    for root, _dirs, names in os.walk(folder) if folder is not None else ():
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            out[os.path.relpath(path, folder)] = [st.st_size, st.st_mtime_ns]
    return out


def _entry(k: str | None) -> Path | None:
    root = cache_dir()
    return root / k[:2] / k if root is not None and k else None


def key(command: str, options: dict, study, version: int | None = None, dated: bool = False) -> str | None:
    """The hash of everything `command` with `options` reads from `study` (module docstring), or None when
    its output is not to be kept."""
    study = Path(study).resolve()
    snapshot = _snapshot(study, version)
    if snapshot is None or cache_dir() is None:
        return None
    plan = study / PLAN
    parts = {"command": command, "options": {k: options[k] for k in sorted(options)}, "study": str(study),
             "snapshot": snapshot, "data": listing(study / DATA),
             "plan": plan.read_text(encoding="utf-8") if version is None and plan.exists() else None,
             "code": code_fingerprint(), "date": dt.date.today().isoformat() if dated else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def kept_files(k: str | None) -> Path | None:
    """The folder of files kept under `k`, read in place (and marked recently used), or None when there is none."""
    entry = _entry(k)
    if entry is None or not (entry / STDOUT).is_file():
        return None
    try:
        os.utime(entry)
    except OSError:
        return None
    return entry / FILES


def replay(k: str | None, out=None) -> str | None:
    """The output kept under `k` (its files copied back into `out`), or None when there is none."""
    files = kept_files(k)
    if files is None:
        return None
    try:
        text = (files.parent / STDOUT).read_text(encoding="utf-8")
        if files.is_dir():
            for source in sorted(p for p in files.rglob("*") if p.is_file()):
                target = Path(out) / source.relative_to(files)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
    except (OSError, UnicodeDecodeError):
        return None  # an entry that cannot be read back is computed again
    return text


def keep(k: str | None, stdout: str, out=None, written_since: dict | None = None) -> None:
    """Keep `stdout` and the files of `out` new or changed since `written_since` (a `listing`) under `k`; a
    failure to keep (a full disk, a read-only cache) costs only the next run's time."""
    entry = _entry(k)
    if entry is None:
        return
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=".making-", dir=entry.parent))
        try:
            for rel, stat in listing(out).items():
                if (written_since or {}).get(rel) != stat:
                    (temp / FILES / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(Path(out) / rel, temp / FILES / rel)
            (temp / STDOUT).write_text(stdout, encoding="utf-8")
            if entry.exists():  # computed again (--fresh): the new entry replaces the old
                old = Path(tempfile.mkdtemp(prefix=".old-", dir=entry.parent))
                os.replace(entry, old / "entry")
                shutil.rmtree(old, ignore_errors=True)
            os.replace(temp, entry)
        finally:
            shutil.rmtree(temp, ignore_errors=True)  # nothing left once renamed into place
        _prune(entry.parent.parent)
    except OSError:
        return


def _prune(root: Path) -> None:
    """Remove the least recently used entries while all of them take more than `LIMIT_BYTES`."""
    entries = [e for d in root.iterdir() if d.is_dir() for e in d.iterdir() if e.is_dir() and not e.name.startswith(".")]
    sizes = {e: sum(s for s, _ in listing(e).values()) for e in entries}
    total = sum(sizes.values())
    for entry in sorted(entries, key=lambda e: e.stat().st_mtime):
        if total <= LIMIT_BYTES:
            break
        shutil.rmtree(entry, ignore_errors=True)
        total -= sizes[entry]

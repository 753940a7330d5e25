"""Shared fixtures: the real recorded responses, the sample trial, fresh study folders, the CLI."""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from skintrack.sample import sample_study_dir

# Commands compute on every call here; tests/test_kept.py turns the kept outputs (skintrack.kept) on itself.
os.environ["SKINTRACK_CACHE"] = "off"

FIXTURES = Path(__file__).parent / "fixtures"
REAL = sorted((FIXTURES / "real").rglob("*.json")) + [FIXTURES / "seed-example.json"]
REAL_IDS = [str(p.relative_to(FIXTURES)) for p in REAL]


def debian_install(*packages: str) -> None:
    """`apt-get install` the engines a test needs (as root; one install at a time, for the test workers
    may ask together). The caller checks afterwards that the engine is there."""
    if not (shutil.which("apt-get") and os.geteuid() == 0):
        return
    with open("/tmp/skintrack-tests-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                       + " ".join(packages), shell=True, check=False, capture_output=True, timeout=1800)


def responses(folder, pattern: str = "*.json") -> list:
    """The response files of a folder in order, without the archive envelopes (``*.meta.json``) beside them."""
    return sorted(p for p in Path(folder).glob(pattern) if not p.name.endswith(".meta.json"))


def load(name: str) -> dict:
    return orjson.loads((FIXTURES / name).read_bytes())


@pytest.fixture
def sample():
    return sample_study_dir()


@pytest.fixture
def run_cli():
    """Run the installed console script as a user would, its output a pipe; returns the CompletedProcess."""

    def run(*args, check=None, env=None, timeout=300):
        exe = Path(sys.executable).with_name("skintrack")
        proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        if check is not None:
            assert proc.returncode == check, proc.stdout + proc.stderr
        return proc

    return run


@pytest.fixture
def emulator():
    """Start emulators on 127.0.0.1 (real HTTP) with the given config; all are stopped afterwards."""
    from skintrack.api.emulator import Emulator, EmulatorConfig

    started = []

    def make(**config):
        config.setdefault("latency", 0)
        config.setdefault("api_key", "test-key")
        emu = Emulator(EmulatorConfig(**config)).start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def photos(tmp_path):
    """A folder of SIMULATED JPEG photos."""
    from skintrack.sample import sample_photo

    def make(n, folder="photos", **kw):
        return [sample_photo(tmp_path / folder, f"p{i:02d}.jpg", seed=i, **kw) for i in range(n)]

    return make

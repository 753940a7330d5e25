"""Shared fixtures: the real recorded responses, the sample trial, fresh study folders, the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from skintrack.simulate import sample_study_dir

FIXTURES = Path(__file__).parent / "fixtures"
REAL = sorted((FIXTURES / "real").rglob("*.json")) + [FIXTURES / "seed-example.json"]
REAL_IDS = [str(p.relative_to(FIXTURES)) for p in REAL]


def load(name: str) -> dict:
    return orjson.loads((FIXTURES / name).read_bytes())


@pytest.fixture
def sample():
    return sample_study_dir()


@pytest.fixture
def run_cli():
    """Run the installed console script as a user would; returns the CompletedProcess."""

    def run(*args, check=None, env=None, timeout=300):
        exe = Path(sys.executable).with_name("skintrack")
        proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        if check is not None:
            assert proc.returncode == check, proc.stdout + proc.stderr
        return proc

    return run

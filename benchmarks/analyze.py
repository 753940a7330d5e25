"""Batch-client benchmark: throughput against the ideal, and the client's own CPU per call.

The emulator runs in its own process (`skintrack emulate`, median latency 2.3 s); the client runs
`skintrack.analyze` in this process (archiving included, ingest excluded) at each concurrency. The ideal
throughput is concurrency / latency, capped by the QPS limit. Because the emulator draws each call's
latency around the median, the client's own efficiency is also shown: the time the calls' drawn latencies
need at that concurrency (sum / concurrency, or the QPS cap) over the time the batch took.

    python benchmarks/analyze.py [--latency 2.3] [--qps 10] [--rounds 20] [--concurrency 1 4 16 32]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

import skintrack
from skintrack.sample import sample_photo


KEY = "bench-key"  # what the local emulator accepts (no vendor key is involved)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=2.3)
    ap.add_argument("--latency-spread", type=float, default=0.15)
    ap.add_argument("--qps", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=20, help="calls per run = rounds x concurrency (at least 8)")
    ap.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 16, 32])
    args = ap.parse_args()
    port = free_port()
    exe = Path(sys.executable).with_name("skintrack")
    server = subprocess.Popen([str(exe), "emulate", "--port", str(port), "--latency", str(args.latency),
                               "--latency-spread", str(args.latency_spread)],  # the key in its variable, never argv
                              env={**os.environ, "AILABAPI_API_KEY": KEY}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api/portrait/analysis/skin-analysis-pro"
    work = Path(tempfile.mkdtemp(prefix="skb-analyze-"))
    try:
        for _ in range(100):
            try:
                requests.get(url, timeout=0.2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        print(f"emulator latency median {args.latency} s, QPS limit {args.qps}; photos 1000x1000 JPEG (SIMULATED)")
        print(f"{'concurrency':>11s} {'calls':>6s} {'calls/s':>8s} {'ideal':>7s} {'x ideal':>8s} {'efficiency':>11s} "
              f"{'CPU ms/call':>12s}")
        stats = lambda: requests.get(url.split("/api/")[0] + "/_emulator/stats", timeout=5).json()  # noqa: E731
        for concurrency in args.concurrency:
            n = max(8, args.rounds * concurrency)
            folder = work / f"c{concurrency}"
            for i in range(n):
                sample_photo(folder, f"p{i:04d}.jpg", size=(1000, 1000), seed=concurrency * 10_000 + i)
            client = skintrack.Client(api_key=KEY, url=url)
            drawn0 = stats()["latency_total"]
            cpu0, t0 = time.process_time(), time.perf_counter()
            report = skintrack.analyze([folder], work / f"study{concurrency}", client=client,
                                       concurrency=concurrency, qps=args.qps, run_ingest=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            assert report.succeeded == n, report
            ideal = min(concurrency / args.latency, args.qps)
            needed = max((stats()["latency_total"] - drawn0) / concurrency, n / args.qps)
            print(f"{concurrency:11d} {n:6d} {n / wall:8.2f} {ideal:7.2f} {n / wall / ideal:8.3f} "
                  f"{needed / wall:11.3f} {cpu / n * 1000:12.2f}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.pop("SKINTRACK_API_URL", None)
    main()

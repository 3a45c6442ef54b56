"""Benchmark the ledger: append rates, and proof size and time at a large log.

Usage: python benchmarks/ledger.py [--json] [--entries N] [--proofs K]

Appends run against fresh SQLite files in a temporary directory opened with
:meth:`Ledger.open` (WAL journal, SQLite's default synchronous=FULL). Each
entry is a small alert payload of six fields. Proof timings include the
SQLite reads of the stored subtree hashes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from iotwarden.ledger import Ledger, verify_consistency, verify_inclusion

SINGLE_APPENDS = 2_000
SMALL_BATCH = 1_000
SMALL_BATCH_ENTRIES = 100_000
LARGE_BATCH = 10_000


def alert_payload(number: int) -> dict:
    return {
        "device": f"sensor-{number % 5000:05d}",
        "detector": "zscore",
        "metric": "temperature",
        "score": 4.0 + (number % 97) / 10,
        "value": 20.0 + (number % 613) / 7,
        "time": 1_700_000_000.0 + number,
    }


def measure_single_appends(directory: Path, count: int) -> float:
    with Ledger.open(directory / "single.db") as log:
        log.append("alert", alert_payload(0))  # creates the key outside the timing
        start = time.perf_counter()
        for number in range(count):
            log.append("alert", alert_payload(number), actor="engine")
        elapsed = time.perf_counter() - start
    return count / elapsed


def fill_in_batches(log: Ledger, total: int, batch_size: int) -> float:
    log.key  # noqa: B018 - creates the key outside the timing
    start = time.perf_counter()
    done = 0
    while done < total:
        count = min(batch_size, total - done)
        log.append_many([("alert", alert_payload(done + i), "engine") for i in range(count)])
        done += count
    return total / (time.perf_counter() - start)


def summarize_times(seconds: list[float]) -> dict:
    return {
        "mean_us": statistics.fmean(seconds) * 1e6,
        "median_us": statistics.median(seconds) * 1e6,
        "max_us": max(seconds) * 1e6,
    }


def measure_proofs(log: Ledger, count: int, rng: random.Random) -> dict:
    size = log.size
    root = log.root_hash()

    inclusion_times, inclusion_lengths, inclusion_verify_times = [], [], []
    for _ in range(count):
        index = rng.randrange(size)
        start = time.perf_counter()
        proof = log.inclusion_proof(index)
        inclusion_times.append(time.perf_counter() - start)
        inclusion_lengths.append(len(proof))
        leaf = log.leaf_hash(index)
        start = time.perf_counter()
        valid = verify_inclusion(leaf, index, size, proof, root)
        inclusion_verify_times.append(time.perf_counter() - start)
        if not valid:
            raise SystemExit(f"inclusion proof of entry {index} did not verify")

    consistency_times, consistency_lengths = [], []
    for _ in range(count):
        old = rng.randrange(1, size)
        start = time.perf_counter()
        proof = log.consistency_proof(old, size)
        consistency_times.append(time.perf_counter() - start)
        consistency_lengths.append(len(proof))
        if not verify_consistency(old, size, log.root_hash(old), root, proof):
            raise SystemExit(f"consistency proof {old} -> {size} did not verify")

    start = time.perf_counter()
    log.root_hash()
    root_seconds = time.perf_counter() - start
    start = time.perf_counter()
    log.checkpoint()
    checkpoint_seconds = time.perf_counter() - start

    return {
        "inclusion_proof": summarize_times(inclusion_times)
        | {"max_hashes": max(inclusion_lengths), "max_bytes": 32 * max(inclusion_lengths)},
        "inclusion_verify": summarize_times(inclusion_verify_times),
        "consistency_proof": summarize_times(consistency_times)
        | {"max_hashes": max(consistency_lengths), "max_bytes": 32 * max(consistency_lengths)},
        "root_hash_us": root_seconds * 1e6,
        "checkpoint_us": checkpoint_seconds * 1e6,
    }


def run(entries: int, proofs: int) -> dict:
    rng = random.Random(20240601)
    results: dict = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "entries": entries,
    }
    with tempfile.TemporaryDirectory(prefix="iotwarden-ledger-bench-") as name:
        directory = Path(name)
        results["single_appends_per_s"] = measure_single_appends(directory, SINGLE_APPENDS)
        with Ledger.open(directory / "batch1000.db") as log:
            results["batch_1000_appends_per_s"] = fill_in_batches(log, min(entries, SMALL_BATCH_ENTRIES), SMALL_BATCH)
        with Ledger.open(directory / "large.db") as log:
            results["batch_10000_appends_per_s"] = fill_in_batches(log, entries, LARGE_BATCH)
            results["proofs"] = measure_proofs(log, proofs, rng)
            start = time.perf_counter()
            report = log.verify()
            results["verify_seconds"] = time.perf_counter() - start
            if not report.ok:
                raise SystemExit(f"verification failed: {report.summary()}")
        results["store_bytes"] = sum(p.stat().st_size for p in directory.glob("large.db*"))
        results["store_bytes_per_entry"] = results["store_bytes"] / entries
    return results


def print_table(results: dict) -> None:
    proofs = results["proofs"]
    print(f"ledger benchmark, {results['entries']:,} entries, {results['machine']}, Python {results['python']}, {results['date']}")
    print(f"  single appends (one transaction each): {results['single_appends_per_s']:,.0f}/s")
    print(f"  append_many, batches of {SMALL_BATCH:,}:      {results['batch_1000_appends_per_s']:,.0f}/s")
    print(f"  append_many, batches of {LARGE_BATCH:,}:     {results['batch_10000_appends_per_s']:,.0f}/s")
    for name in ("inclusion_proof", "consistency_proof"):
        item = proofs[name]
        print(
            f"  {name}: mean {item['mean_us']:.0f} us, median {item['median_us']:.0f} us, max {item['max_us']:.0f} us, "
            f"up to {item['max_hashes']} hashes ({item['max_bytes']} bytes)"
        )
    print(f"  verify_inclusion: mean {proofs['inclusion_verify']['mean_us']:.0f} us")
    print(f"  root_hash: {proofs['root_hash_us']:.0f} us, signed checkpoint: {proofs['checkpoint_us']:.0f} us")
    print(f"  full verify(): {results['verify_seconds']:.1f} s")
    print(f"  store size: {results['store_bytes'] / 1e6:.0f} MB ({results['store_bytes_per_entry']:.0f} bytes per entry)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--entries", type=int, default=1_000_000, help="size of the large log (default: 1,000,000)")
    parser.add_argument("--proofs", type=int, default=1_000, help="number of random proofs to time (default: 1000)")
    args = parser.parse_args(argv)
    if args.entries < 2:
        parser.error("--entries must be at least 2")
    results = run(args.entries, args.proofs)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

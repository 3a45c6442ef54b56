"""Benchmark detection throughput and memory against River and PySAD on one stream.

Usage: python benchmarks/throughput.py [--json] [--devices 10000] [--observations 1000000]
       [--metrics 10] [--peer-observations 20000] [--store sqlite|none] [--profile N]

One synthetic fleet stream (see ``benchmarks/_streams.py``) is built and
written to a ``.npz`` file and a CSV file in a temporary directory. None of
that is timed. Each measurement then runs in its own spawned child process,
so its peak RSS is its own:

* core: ``Engine.process_arrays`` over micro-batches of the engine's default
  ``batch_size``, with the default ``rate_features`` (derived message-rate
  metrics are added to the metrics of the stream). A throw-away engine runs
  first on 20,000 observations, so loading the compiled kernels is not timed.
* state: the same run under ``tracemalloc``: memory the engine keeps after
  the stream, per device. A throw-away engine runs first, so compiled
  kernels and Student-t tables (once per process) are not counted.
* pipeline: ``read_records(csv)`` then ``Replay(engine).run(...)``, as
  ``iotwarden detect`` does, with an SQLite alert store, the console's
  observation history and suppressions, and a dead-letter file in the
  temporary directory (or no store with ``--store none``). A replay of the
  CSV's first 20,000 rows runs first without a store, so loading (or, on a
  fresh checkout, compiling) the kernels is not timed.
* River ``MinMaxScaler | HalfSpaceTrees`` and PySAD ``LODA``, default
  parameters: ONE model shared by all devices, score then learn each
  observation of the first ``--peer-observations`` observations.

``--profile N`` also runs cProfile over the first N observations of the core
and of the pipeline (in this process) and prints where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import multiprocessing
import os
import platform
import pickle
import pstats
import resource
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _streams import Stream, load_stream, make_stream, save_stream, write_csv  # noqa: E402

# Floors the product promises (see benchmarks/README.md).
CORE_FLOOR = 500_000.0  # observations/s of Engine.process_arrays on one core
PIPELINE_FLOOR = 100_000.0  # observations/s from CSV through Replay
STATE_FLOOR = 2048  # bytes of detector state per device at 10 metrics

MB = 1024.0 * 1024.0


# Memory probes ------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """Return the peak resident set size of this process's own address space.

    Linux keeps ``ru_maxrss`` across exec, so a spawned child would report at
    least the RSS of the parent that forked it. ``VmHWM`` in
    /proc/self/status belongs to the new address space and has no such
    floor. Elsewhere ``ru_maxrss`` is used as is.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int:
    """Return the current resident set size, or the peak where /proc is missing."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


# Measurements, each run in a fresh child process ----------------------------------


def _feed_engine(engine: Any, stream: Stream, devices: list[str], limit: int | None = None) -> int:
    batch = engine.config.batch_size
    names = stream.metric_names
    stop = len(stream) if limit is None else min(limit, len(stream))
    opened = 0
    for start in range(0, stop, batch):
        end = min(start + batch, stop)
        result = engine.process_arrays(devices[start:end], stream.times[start:end], stream.values[start:end], names)
        opened += len(result.alerts)
    return opened


def _warm_up(stream: Stream, devices: list[str]) -> None:
    """Run a throw-away engine on the first 20,000 observations.

    It loads the compiled kernels from Numba's cache and fills the Student-t
    tables. Both happen once per process, so no measurement counts them.
    """
    from iotwarden.engine import Engine, EngineConfig

    _feed_engine(Engine(EngineConfig()), stream, devices, limit=20_000)


def measure_core(stream_path: str) -> dict[str, Any]:
    """Time Engine.process_arrays over the whole stream."""
    from iotwarden.engine import Engine, EngineConfig  # first: importing detectors before engine is circular
    from iotwarden.detectors.liveness import RATE_METRICS

    stream = load_stream(Path(stream_path))
    devices = stream.device_column()
    _warm_up(stream, devices)
    rss_before = current_rss_bytes()

    engine = Engine(EngineConfig())
    start = time.perf_counter()
    opened = _feed_engine(engine, stream, devices)
    elapsed = time.perf_counter() - start

    allocated = sum(array.nbytes for shard in engine.shards for array in shard.arrays.values())
    return {
        "observations": len(stream),
        "seconds": elapsed,
        "obs_per_s": len(stream) / elapsed,
        "alerts_opened": opened,
        "devices": engine.n_devices,
        "batch_size": engine.config.batch_size,
        "engine_metrics": engine.n_metrics,
        "derived_metrics": list(RATE_METRICS) if engine.config.rate_features else [],
        "declared_state_bytes_10": engine.state_bytes_per_device(10),
        "declared_state_bytes_all": engine.state_bytes_per_device(),
        "allocated_state_bytes_per_device": allocated / engine.n_devices,
        "rss_before_mb": rss_before / MB,
        "peak_rss_mb": peak_rss_bytes() / MB,
    }


def measure_state(stream_path: str) -> dict[str, Any]:
    """Measure with tracemalloc what the engine keeps, and its peak, per device."""
    from iotwarden.engine import Engine, EngineConfig

    stream = load_stream(Path(stream_path))
    devices = stream.device_column()
    _warm_up(stream, devices)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = Engine(EngineConfig())
    _feed_engine(engine, stream, devices)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    count = engine.n_devices
    return {
        "retained_bytes_per_device": (current - before) / count,
        "peak_bytes_per_device": (peak - before) / count,
    }


def measure_pipeline(csv_path: str, store: str) -> dict[str, Any]:
    """Time read_records(csv) through Replay(engine).run, as ``iotwarden detect`` runs it."""
    from iotwarden.cli import attach_console_feeds
    from iotwarden.engine import Engine, EngineConfig
    from iotwarden.pipeline import Replay
    from iotwarden.sources.deadletter import DeadLetterWriter
    from iotwarden.sources.files import read_records
    from iotwarden.store import AlertStore

    with tempfile.TemporaryDirectory(prefix="iotwarden-bench-warm-up-") as directory:
        head = Path(directory) / "head.csv"
        with open(csv_path, encoding="utf-8") as source, open(head, "w", encoding="utf-8") as target:
            target.writelines(itertools.islice(source, 20_001))
        Replay(Engine(EngineConfig())).run(read_records(str(head)))

    rss_before = current_rss_bytes()
    with tempfile.TemporaryDirectory(prefix="iotwarden-bench-store-") as directory:
        start = time.perf_counter()
        items = read_records(csv_path)
        if store == "sqlite":
            store_file = Path(directory) / "alerts.db"
            with AlertStore(store_file) as alert_store, DeadLetterWriter(Path(directory) / "dead-letters.jsonl") as dead:
                run_id = alert_store.start_run(f"detect {csv_path}")
                replay = Replay(Engine(EngineConfig()), store=alert_store, dead_letters=dead)
                recorder = attach_console_feeds(replay, alert_store)
                summary = replay.run(items)
                recorder.flush()
                alert_store.finish_run(run_id, summary.to_dict())
        else:
            replay = Replay(Engine(EngineConfig()))
            summary = replay.run(items)
        elapsed = time.perf_counter() - start

    return {
        "observations": summary.observations,
        "records": summary.records,
        "rejected": sum(summary.rejected.values()),
        "alerts_opened": summary.alerts,
        "seconds": elapsed,
        "obs_per_s": summary.observations / elapsed,
        "store": store,
        "rss_before_mb": rss_before / MB,
        "peak_rss_mb": peak_rss_bytes() / MB,
    }


def measure_reader(csv_path: str) -> dict[str, Any]:
    """Time read_records(csv) alone, in the block form that Replay reads, to split the pipeline's time."""
    from iotwarden.engine import Engine  # noqa: F401 - first: importing detectors before engine is circular
    from iotwarden.observation import Observation
    from iotwarden.sources.blocks import ObservationBlock
    from iotwarden.sources.files import read_records

    start = time.perf_counter()
    count = 0
    for entry in read_records(csv_path).blocks():
        if isinstance(entry, ObservationBlock):
            count += entry.row_count
        elif isinstance(entry, Observation):
            count += 1
    elapsed = time.perf_counter() - start
    return {"observations": count, "seconds": elapsed, "obs_per_s": count / elapsed, "peak_rss_mb": peak_rss_bytes() / MB}


def _river_model() -> Any:
    from river import anomaly, preprocessing

    return preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees()


def _loda_model() -> Any:
    from pysad.models import LODA

    return LODA()


def measure_peer(stream_path: str, peer: str, limit: int) -> dict[str, Any]:
    """Time one shared peer model, score then learn per observation, on the first ``limit`` rows."""
    stream = load_stream(Path(stream_path))
    count = min(limit, len(stream))
    rows = stream.values[:count]
    if peer == "river_hst":
        make_model = _river_model
        names = stream.metric_names
        inputs: list[Any] = [dict(zip(names, row)) for row in rows.tolist()]

        def step(model: Any, x: Any) -> None:
            model.score_one(x)
            model.learn_one(x)

    else:
        make_model = _loda_model
        inputs = list(rows)

        def step(model: Any, x: Any) -> None:
            model.score_partial(x)
            model.fit_partial(x)

    model = make_model()
    start = time.perf_counter()
    for x in inputs:
        step(model, x)
    elapsed = time.perf_counter() - start
    pickle_bytes = len(pickle.dumps(model))

    # A second model under tracemalloc, fed the same rows, gives the in-memory size of one model.
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    traced = make_model()
    for x in inputs[: min(count, 2_000)]:
        step(traced, x)
    model_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {
        "observations": count,
        "seconds": elapsed,
        "obs_per_s": count / elapsed,
        "model_bytes": model_bytes,
        "pickle_bytes": pickle_bytes,
        "peak_rss_mb": peak_rss_bytes() / MB,
    }


def run_in_child(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run one measurement in a fresh spawned process and return its result.

    Each child reports its own peak (see :func:`peak_rss_bytes`), because the
    parent's ``RUSAGE_CHILDREN`` peak is the maximum over every child reaped
    so far. Spawn (not fork) keeps the parent's stream out of the child's RSS.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


# Profiling ----------------------------------------------------------------------


def profile_runs(stream: Stream, csv_path: Path, limit: int, top: int = 20) -> dict[str, list[dict[str, Any]]]:
    """Run cProfile over the whole stream in the core and its first ``limit`` CSV records in the pipeline.

    The core makes few Python calls per batch, so profiling it costs little
    and the whole stream shows the steady state after warm-up. The pipeline
    makes several calls per record, so only its head is profiled.
    """
    from iotwarden.engine import Engine, EngineConfig
    from iotwarden.pipeline import Replay
    from iotwarden.sources.files import read_records

    head = csv_path.with_name("head.csv")
    with open(csv_path, encoding="utf-8") as source, open(head, "w", encoding="utf-8") as out:
        for number, line in enumerate(source):
            if number > limit:
                break
            out.write(line)

    devices = stream.device_column()
    reports = {}
    for name, work in (
        ("core", lambda: _feed_engine(Engine(EngineConfig()), stream, devices)),
        ("pipeline", lambda: Replay(Engine(EngineConfig())).run(read_records(head))),
    ):
        profiler = cProfile.Profile()
        profiler.enable()
        work()
        profiler.disable()
        reports[name] = _top_functions(pstats.Stats(profiler), top)
    return reports


def _top_functions(stats: pstats.Stats, top: int) -> list[dict[str, Any]]:
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename.split("/src/")[-1] if "/src/" in filename else Path(filename).name
        rows.append(
            {
                "function": f"{where}:{line}({function})",
                "calls": calls,
                "own_s": own,
                "own_share": own / total,
                "cumulative_s": cumulative,
                "cumulative_share": cumulative / total,
            }
        )
    rows.sort(key=lambda row: row["own_s"], reverse=True)
    return rows[:top]


# Report ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from importlib.metadata import version

    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "river": version("river"),
        "pysad": version("pysad"),
        "iotwarden": version("iotwarden"),
        "platform": platform.platform(),
        "load_average_1min_at_end": os.getloadavg()[0],
    }


def collect(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    stream = make_stream(args.devices, args.observations, args.metrics)
    stream_path = directory / "stream.npz"
    csv_path = directory / "stream.csv"
    save_stream(stream, stream_path)
    write_csv(stream, csv_path)

    # The peers read only their rows, so their peak RSS does not include the whole stream.
    peer_path = directory / "peer-stream.npz"
    save_stream(stream.head(args.peer_observations), peer_path)

    core = run_in_child(measure_core, str(stream_path))
    state = run_in_child(measure_state, str(stream_path))
    pipeline = run_in_child(measure_pipeline, str(csv_path), args.store)
    reader = run_in_child(measure_reader, str(csv_path))
    hst = run_in_child(measure_peer, str(peer_path), "river_hst", args.peer_observations)
    loda = run_in_child(measure_peer, str(peer_path), "pysad_loda", args.peer_observations)

    devices = core["devices"]
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "stream": {
            "devices": args.devices,
            "observations": len(stream),
            "metrics": stream.metric_names,
            "injected_anomaly_share": float(stream.anomaly.mean()),
            "csv_bytes": csv_path.stat().st_size,
        },
        "core_obs_per_s": core["obs_per_s"],
        "pipeline_obs_per_s": pipeline["obs_per_s"],
        "reader_obs_per_s": reader["obs_per_s"],
        "state_bytes_per_device": core["declared_state_bytes_10"],
        "measured_state_bytes_per_device": state["retained_bytes_per_device"],
        "measured_peak_bytes_per_device": state["peak_bytes_per_device"],
        "rss_delta_bytes_per_device": (core["peak_rss_mb"] - core["rss_before_mb"]) * MB / devices,
        "peak_rss_core_mb": core["peak_rss_mb"],
        "peak_rss_pipeline_mb": pipeline["peak_rss_mb"],
        "river_hst_obs_per_s": hst["obs_per_s"],
        "pysad_loda_obs_per_s": loda["obs_per_s"],
        "river_hst_model_bytes": hst["model_bytes"],
        "pysad_loda_model_bytes": loda["model_bytes"],
        "river_hst_pickle_bytes": hst["pickle_bytes"],
        "pysad_loda_pickle_bytes": loda["pickle_bytes"],
        "river_hst_fleet_mb": hst["model_bytes"] * devices / MB,
        "pysad_loda_fleet_mb": loda["model_bytes"] * devices / MB,
        "ratio_core_to_river_hst": core["obs_per_s"] / hst["obs_per_s"],
        "ratio_core_to_pysad_loda": core["obs_per_s"] / loda["obs_per_s"],
        "ratio_pipeline_to_river_hst": pipeline["obs_per_s"] / hst["obs_per_s"],
        "core": core,
        "state": state,
        "pipeline": pipeline,
        "reader": reader,
        "river_hst": hst,
        "pysad_loda": loda,
    }
    results["floors"] = {
        "core_obs_per_s": {"floor": CORE_FLOOR, "met": core["obs_per_s"] >= CORE_FLOOR},
        "pipeline_obs_per_s": {"floor": PIPELINE_FLOOR, "met": pipeline["obs_per_s"] >= PIPELINE_FLOOR},
        "state_bytes_per_device": {"floor": STATE_FLOOR, "met": core["declared_state_bytes_10"] < STATE_FLOOR},
        "measured_state_bytes_per_device": {"floor": STATE_FLOOR, "met": state["retained_bytes_per_device"] < STATE_FLOOR},
    }
    if args.profile:
        results["profile"] = profile_runs(stream, csv_path, args.profile)
    return results


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    core, pipeline, hst, loda = results["core"], results["pipeline"], results["river_hst"], results["pysad_loda"]
    stream = results["stream"]
    floors = results["floors"]

    def verdict(name: str) -> str:
        return "meets" if floors[name]["met"] else "[bold red]MISSES[/]"

    table = Table(title=f"Throughput on {stream['observations']:,} observations, {stream['devices']:,} devices, {len(stream['metrics'])} metrics")
    table.add_column("measurement")
    table.add_column("observations", justify="right")
    table.add_column("obs/s", justify="right")
    table.add_column("peak RSS MB", justify="right")
    table.add_column("memory", justify="right")
    table.add_column("floor")
    derived = ", ".join(core["derived_metrics"]) or "none"
    table.add_row(
        f"iotwarden core (process_arrays, batch {core['batch_size']}, +{derived})",
        f"{core['observations']:,}",
        f"{core['obs_per_s']:,.0f}",
        f"{core['peak_rss_mb']:.0f}",
        f"{results['measured_state_bytes_per_device']:,.0f} B/device",
        f"{verdict('core_obs_per_s')} >= {CORE_FLOOR:,.0f}",
    )
    table.add_row(
        f"iotwarden pipeline (CSV -> Replay, store {pipeline['store']})",
        f"{pipeline['observations']:,}",
        f"{pipeline['obs_per_s']:,.0f}",
        f"{pipeline['peak_rss_mb']:.0f}",
        "",
        f"{verdict('pipeline_obs_per_s')} >= {PIPELINE_FLOOR:,.0f}",
    )
    table.add_row(
        "read_records(csv) alone, no engine",
        f"{results['reader']['observations']:,}",
        f"{results['reader']['obs_per_s']:,.0f}",
        f"{results['reader']['peak_rss_mb']:.0f}",
        "",
        "",
    )
    for label, peer, fleet in (
        ("River MinMaxScaler | HalfSpaceTrees (1 shared model)", hst, results["river_hst_fleet_mb"]),
        ("PySAD LODA (1 shared model)", loda, results["pysad_loda_fleet_mb"]),
    ):
        table.add_row(
            label,
            f"{peer['observations']:,}",
            f"{peer['obs_per_s']:,.0f}",
            f"{peer['peak_rss_mb']:.0f}",
            f"{peer['model_bytes'] / 1024:,.0f} KiB/model; {fleet:,.0f} MB per-device fleet",
            "",
        )
    console.print(table)

    state = Table(title="Detector state per device")
    state.add_column("figure")
    state.add_column("bytes", justify="right")
    state.add_row("Engine.state_bytes_per_device(10)", f"{core['declared_state_bytes_10']:,}")
    state.add_row(f"Engine.state_bytes_per_device() at {core['engine_metrics']} engine metrics", f"{core['declared_state_bytes_all']:,}")
    state.add_row("allocated shard arrays / devices (with growth capacity)", f"{core['allocated_state_bytes_per_device']:,.0f}")
    state.add_row("tracemalloc retained after stream / devices", f"{results['measured_state_bytes_per_device']:,.0f}")
    state.add_row("tracemalloc peak during stream / devices", f"{results['measured_peak_bytes_per_device']:,.0f}")
    state.add_row("core child peak RSS - RSS before engine, / devices", f"{results['rss_delta_bytes_per_device']:,.0f}")
    state.add_row(f"declared figure vs floor (< {STATE_FLOOR:,} at 10 metrics)", verdict("state_bytes_per_device"))
    state.add_row(f"retained figure vs floor (< {STATE_FLOOR:,})", verdict("measured_state_bytes_per_device"))
    console.print(state)

    console.print(
        f"ratios: core / HST {results['ratio_core_to_river_hst']:,.1f}x, "
        f"core / LODA {results['ratio_core_to_pysad_loda']:,.1f}x, "
        f"pipeline / HST {results['ratio_pipeline_to_river_hst']:,.1f}x"
    )
    info = results["machine"]
    console.print(
        f"machine: {info['cpu']}, {info['cpu_count']} CPUs, Python {info['python']}, numpy {info['numpy']}, "
        f"river {info['river']}, pysad {info['pysad']}; load average {info['load_average_1min_at_end']:.2f}; {results['date']}"
    )
    console.print(
        f"alerts opened: core {core['alerts_opened']:,}, pipeline {pipeline['alerts_opened']:,}; "
        f"injected anomalies {stream['injected_anomaly_share']:.2%} of observations"
    )

    for name, rows in results.get("profile", {}).items():
        profile = Table(title=f"cProfile of the {name}, by own time")
        for column in ("function", "calls", "own s", "own %", "cumulative %"):
            profile.add_column(column, justify="left" if column == "function" else "right")
        for row in rows:
            profile.add_row(
                row["function"], f"{row['calls']:,}", f"{row['own_s']:.2f}", f"{row['own_share']:.1%}", f"{row['cumulative_share']:.1%}"
            )
        console.print(profile)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--devices", type=int, default=10_000, help="devices in the fleet (default: 10000)")
    parser.add_argument("--observations", type=int, default=1_000_000, help="observations in the stream (default: 1000000)")
    parser.add_argument("--metrics", type=int, default=10, help="metrics per observation (default: 10)")
    parser.add_argument(
        "--peer-observations", type=int, default=20_000, help="observations fed to each peer model (default: 20000)"
    )
    parser.add_argument(
        "--store", choices=("sqlite", "none"), default="sqlite", help="alert store of the pipeline run (default: sqlite)"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also cProfile the core over the whole stream and the pipeline over the first N CSV records",
    )
    args = parser.parse_args(argv)
    if args.peer_observations < 1:
        parser.error(f"--peer-observations must be >= 1, got {args.peer_observations}")

    with tempfile.TemporaryDirectory(prefix="iotwarden-bench-") as directory:
        results = collect(args, Path(directory))
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

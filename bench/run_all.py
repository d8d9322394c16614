"""Every benchmark in bench/ in one go (``make bench``; ``make bench QUICK=1`` for small sizes).

Each script runs as its own subprocess with ``--json``, one after the other (the machine is
small: two at once would measure each other), each with a timeout; a script that fails or
times out is recorded with its error and the others still run. Then, in ``--out``
(bench/results by default):

* ``latest.json`` — the headline figures as flat keys (units in the names, null when the
  script that measures it failed), ``machine``, ``runs`` (arguments, seconds, outcome per
  script) and every script's own JSON under ``scripts``;
* ``latest.md`` — the figures as a table next to the raw limit each script measured in the
  same run, the machine, and the two plots;
* ``latency.png`` — latency percentiles of the latency benchmarks, grouped bars, log scale;
* ``quality.png`` — HR@10, NDCG@10 and Recall@20 per model from recommend_quality;
* ``logs/<script>.log`` — each script's stderr.

Figures are for reading, never for pass/fail; the exit status is non-zero only when a
script failed. Uses TAILOR_PG_DSN / TAILOR_NATS_URL, as the scripts do, else embedded servers.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
KILL_GRACE_SECONDS = 15.0


@dataclass(frozen=True)
class Script:
    """One benchmark script and the arguments of a full and of a quick run."""

    name: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    timeout_seconds: float
    quick_timeout_seconds: float

    @property
    def path(self) -> Path:
        return BENCH / f"{self.name}.py"


#: In-process benchmarks first, then those that start services. Quick sizes keep the whole
#: quick run under three minutes on two cores (segment_membership: the latency part only);
#: the full run uses each script's defaults (recommend_quality on the whole UCI file, about
#: five minutes).
SCRIPTS = (
    Script("core_throughput", (), ("--events", "1000", "--rounds", "1"), 300, 60),
    Script(
        "profile_projection",
        (),
        ("--events", "2000", "--subjects", "500", "--rounds", "1"),
        300,
        60,
    ),
    Script("recommend_quality", (), ("--sample",), 1200, 90),
    Script(
        "consent",
        (),
        ("--callers", "20", "--per-caller", "20", "--subjects", "50", "--rounds", "10"),
        300,
        60,
    ),
    Script(
        "ingest_throughput",
        (),
        (
            *("--events", "2000", "--rounds", "1", "--subjects", "200"),
            *("--seconds", "2", "--overload-clients", "10"),
        ),
        600,
        90,
    ),
    Script(
        "profile_latency",
        (),
        ("--rate", "100", "--seconds", "2", "--subjects", "100", "--deadline", "5"),
        300,
        60,
    ),
    Script(
        "segment_membership",
        (),
        ("--only", "latency", "--rate", "50", "--seconds", "1", "--deadline", "5"),
        900,
        60,
    ),
    Script("erasure", (), ("--single", "1", "--many", "5"), 900, 60),
    Script(
        "recommend_serving",
        (),
        ("--callers", "10", "--requests", "100", "--rounds", "1", "--lag-samples", "5"),
        900,
        120,
    ),
    Script("e2e_freshness", (), ("--rate", "10", "--seconds", "2", "--deadline", "5"), 300, 60),
)


@dataclass(frozen=True)
class Figure:
    """A headline figure: ``source`` in ``script``'s JSON (dots for nesting), next to the
    raw limit ``limit`` of the same run (times ``limit_scale`` into this figure's unit)."""

    key: str
    section: str
    label: str
    unit: str
    script: str
    source: str
    limit: str | None = None
    limit_label: str = ""
    limit_scale: float = 1.0


THROUGHPUT, LATENCY, QUALITY = "Throughput", "Latency", "Recommendation quality (offline)"
RAW_PUBLISH = "raw nats-py js.publish"
RAW_PG = "raw asyncpg batched writes"
HEALTH = "gRPC health check"
RAW_JS = "raw JetStream publish → consumer"
MOSTPOP = "most-popular baseline"

FIGURES = (
    Figure(
        "ingest_events_per_s",
        THROUGHPUT,
        "ingest, Batch or StreamEvents (the faster)",
        "events/s",
        "ingest_throughput",
        "ingest_events_per_s",
        "raw_js_publish_per_s",
        RAW_PUBLISH,
    ),
    Figure(
        "outbox_relay_per_s",
        THROUGHPUT,
        "outbox relay",
        "events/s",
        "core_throughput",
        "median.outbox_relay_per_s",
        "median.raw_js_publish_per_s",
        RAW_PUBLISH,
    ),
    Figure(
        "inbox_consume_per_s",
        THROUGHPUT,
        "inbox consumer",
        "events/s",
        "core_throughput",
        "median.inbox_consume_per_s",
        "median.raw_pg_rows_per_s",
        RAW_PG,
    ),
    Figure(
        "profile_events_per_s",
        THROUGHPUT,
        "profile live projection",
        "events/s",
        "profile_projection",
        "profile_events_per_s",
        "raw_pg_rows_per_s",
        RAW_PG,
    ),
    Figure(
        "profile_replay_events_per_s",
        THROUGHPUT,
        "profile replay",
        "events/s",
        "profile_projection",
        "profile_replay_events_per_s",
        "raw_pg_rows_per_s",
        RAW_PG,
    ),
    Figure(
        "segment_evaluation_events_per_s",
        THROUGHPUT,
        "segment evaluation, 100 segments",
        "events/s",
        "segment_membership",
        "evaluation_events_per_s",
        "evaluation_raw_pg_events_per_s",
        RAW_PG,
    ),
    Figure(
        "consent_check_qps",
        THROUGHPUT,
        "CheckConsent RPC",
        "calls/s",
        "consent",
        "consent_check_qps",
        "raw_health_rpc_qps",
        HEALTH,
    ),
    Figure(
        "recommend_qps",
        THROUGHPUT,
        "Recommend RPC",
        "calls/s",
        "recommend_serving",
        "latency_recommend_per_s",
        "latency_health_per_s",
        HEALTH,
    ),
    Figure(
        "erasures_per_s",
        THROUGHPUT,
        "erasure of many subjects at once",
        "erasures/s",
        "erasure",
        "erasures_per_s",
    ),
    Figure(
        "ingest_track_p99_ms",
        LATENCY,
        "ingest Track, p99 at a fixed rate",
        "ms",
        "ingest_throughput",
        "unary_track_p99_ms",
    ),
    Figure(
        "consent_check_p99_ms",
        LATENCY,
        "CheckConsent RPC p99",
        "ms",
        "consent",
        "consent_check_p99_ms",
        "raw_health_rpc_p99_ms",
        HEALTH,
    ),
    Figure(
        "cached_consent_check_p99_us",
        LATENCY,
        "cached consent check in a client, p99",
        "µs",
        "consent",
        "cached_check_p99_us",
    ),
    Figure(
        "withdrawal_propagation_p99_ms",
        LATENCY,
        "consent withdrawal → another process denies, p99",
        "ms",
        "consent",
        "withdrawal_propagation_p99_ms",
        "raw_health_rpc_p99_ms",
        HEALTH,
    ),
    Figure(
        "profile_latency_p99_ms",
        LATENCY,
        "Track → ProfileChanged p99",
        "ms",
        "profile_latency",
        "profile_p99_ms",
        "raw_p99_ms",
        RAW_JS,
    ),
    Figure(
        "segment_latency_p99_ms",
        LATENCY,
        "Track → SegmentEntered p99",
        "ms",
        "segment_membership",
        "latency_segment_p99_ms",
        "latency_raw_p99_ms",
        RAW_JS,
    ),
    Figure(
        "segment_clock_lag_p99_ms",
        LATENCY,
        "window expiry → SegmentExited p99",
        "ms",
        "segment_membership",
        "clock_p99_ms",
        "clock_seconds",
        "segment clock interval",
        1000.0,
    ),
    Figure(
        "recommend_p50_ms",
        LATENCY,
        "Recommend RPC p50",
        "ms",
        "recommend_serving",
        "latency_recommend_p50_ms",
        "latency_health_p50_ms",
        HEALTH,
    ),
    Figure(
        "recommend_p99_ms",
        LATENCY,
        "Recommend RPC p99",
        "ms",
        "recommend_serving",
        "latency_recommend_p99_ms",
        "latency_health_p99_ms",
        HEALTH,
    ),
    Figure(
        "similar_items_p99_ms",
        LATENCY,
        "SimilarItems RPC p99",
        "ms",
        "recommend_serving",
        "latency_similar_p99_ms",
        "latency_health_p99_ms",
        HEALTH,
    ),
    Figure(
        "recommend_lag_p99_ms",
        LATENCY,
        "order → listed in SimilarItems, p99, one at a time",
        "ms",
        "recommend_serving",
        "lag_similar_p99_ms",
        "lag_raw_p99_ms",
        RAW_JS,
    ),
    Figure(
        "e2e_freshness_p50_ms",
        LATENCY,
        "end to end: order → profile, segment and recommendation, p50",
        "ms",
        "e2e_freshness",
        "chain_p50_ms",
        "raw_p50_ms",
        RAW_JS,
    ),
    Figure(
        "e2e_freshness_p99_ms",
        LATENCY,
        "end to end: order → profile, segment and recommendation, p99",
        "ms",
        "e2e_freshness",
        "chain_p99_ms",
        "raw_p99_ms",
        RAW_JS,
    ),
    Figure(
        "erasure_one_subject_s",
        LATENCY,
        "erasure of one subject, five services confirming (median)",
        "s",
        "erasure",
        "erasure_one_subject_s",
        "rpc_round_trip_ms",
        "consent RPC round trip",
        0.001,
    ),
    Figure(
        "ndcg10_served",
        QUALITY,
        "NDCG@10, served blend",
        "",
        "recommend_quality",
        "ndcg10_served",
        "ndcg10_mostpop",
        MOSTPOP,
    ),
    Figure(
        "ndcg10_als",
        QUALITY,
        "NDCG@10, ALS",
        "",
        "recommend_quality",
        "ndcg10_als",
        "ndcg10_mostpop",
        MOSTPOP,
    ),
    Figure(
        "ndcg10_mostpop",
        QUALITY,
        "NDCG@10, most-popular",
        "",
        "recommend_quality",
        "ndcg10_mostpop",
    ),
    Figure(
        "hr10_served",
        QUALITY,
        "HR@10, served blend",
        "",
        "recommend_quality",
        "hr10_served",
        "hr10_mostpop",
        MOSTPOP,
    ),
    Figure("hr10_mostpop", QUALITY, "HR@10, most-popular", "", "recommend_quality", "hr10_mostpop"),
    Figure(
        "recall20_served",
        QUALITY,
        "Recall@20, served blend",
        "",
        "recommend_quality",
        "recall20_served",
        "recall20_mostpop",
        MOSTPOP,
    ),
)

#: Keys of latest.json that are not rows of the table: raw limits and ratios as the scripts
#: computed them (key, script, source).
EXTRA_KEYS = (
    ("raw_js_publish_per_s", "ingest_throughput", "raw_js_publish_per_s"),
    ("ingest_ratio", "ingest_throughput", "ingest_ratio"),
    ("raw_pg_rows_per_s", "profile_projection", "raw_pg_rows_per_s"),
    ("profile_ratio", "profile_projection", "profile_ratio"),
)


@dataclass(frozen=True)
class LatencyGroup:
    """One group of bars in latency.png: a path's p50/p99 and its raw limit's, in ms."""

    label: str
    script: str
    prefix: str
    raw_prefix: str | None


LATENCY_GROUPS = (
    LatencyGroup("CheckConsent", "consent", "consent_check", "raw_health_rpc"),
    LatencyGroup("withdrawal\npropagation", "consent", "withdrawal_propagation", "raw_health_rpc"),
    LatencyGroup("ingest Track", "ingest_throughput", "unary_track", None),
    LatencyGroup("Track →\nProfileChanged", "profile_latency", "profile", "raw"),
    LatencyGroup("Track →\nSegmentEntered", "segment_membership", "latency_segment", "latency_raw"),
    LatencyGroup("Recommend", "recommend_serving", "latency_recommend", "latency_health"),
    LatencyGroup("SimilarItems", "recommend_serving", "latency_similar", "latency_health"),
    LatencyGroup("Popular", "recommend_serving", "latency_popular", "latency_health"),
    LatencyGroup("order →\nSimilarItems", "recommend_serving", "lag_similar", "lag_raw"),
    LatencyGroup("end to end\n(chain)", "e2e_freshness", "chain", "raw"),
)
QUALITY_MODELS = (
    ("mostpop", "most-popular"),
    ("knn", "item-kNN"),
    ("als", "ALS"),
    ("served", "served blend"),
)
QUALITY_METRICS = (("hr10", "HR@10"), ("ndcg10", "NDCG@10"), ("recall20", "Recall@20"))


# --- running the scripts -----------------------------------------------------------------------


def parse_json_output(stdout: str) -> dict[str, Any]:
    """The script's JSON: the whole of stdout, or from the first line that opens an object
    (a script may print a progress line before it)."""
    try:
        found = json.loads(stdout)
    except json.JSONDecodeError:
        lines = stdout.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("{")), None)
        if start is None:
            raise
        found = json.loads("\n".join(lines[start:]))
    if not isinstance(found, dict):
        raise ValueError(f"expected a JSON object, got {type(found).__name__}")
    return found


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """End the script and the services it started (its own process group): SIGTERM, then
    SIGKILL after a grace period."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_script(script: Script, quick: bool, logs: Path) -> dict[str, Any]:
    """Run one script with ``--json``; its outcome, never an exception."""
    args = [*(script.quick if quick else script.full), "--json"]
    timeout = script.quick_timeout_seconds if quick else script.timeout_seconds
    log_path = logs / f"{script.name}.log"
    outcome: dict[str, Any] = {
        "script": f"bench/{script.path.name}",
        "args": args,
        "timeout_seconds": timeout,
        "log": str(log_path.relative_to(ROOT)) if log_path.is_relative_to(ROOT) else str(log_path),
    }
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, log_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(script.path), *args],
            cwd=ROOT,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so a timeout ends its services
        )
        try:
            returncode: int | None = process.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_group(process)
            returncode = None
        outcome["seconds"] = time.perf_counter() - started
        stdout.seek(0)
        text = stdout.read().decode(errors="replace")
    outcome["returncode"] = returncode
    if returncode is None:
        outcome |= {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    elif returncode != 0:
        outcome |= {"ok": False, "error": f"exit status {returncode}: {last_line(log_path)}"}
    else:
        try:
            outcome |= {"ok": True, "error": None, "result": parse_json_output(text)}
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            outcome |= {"ok": False, "error": f"no JSON on stdout: {error}"}
    return outcome


def last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(nothing on stderr)"


# --- the machine -------------------------------------------------------------------------------


def cpu_facts() -> dict[str, Any]:
    models, processors = [], 0
    with open("/proc/cpuinfo") as info:
        for line in info:
            name, _, value = line.partition(":")
            if name.strip() == "processor":
                processors += 1
            elif name.strip() == "model name":
                models.append(value.strip())
    return {
        "cpu_model": models[0] if models else platform.processor() or "unknown",
        "cpu_count": processors or os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
    }


def memory_gib() -> float | None:
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


async def server_versions() -> dict[str, str]:
    """Postgres and NATS server versions, asked of the servers the scripts use."""
    import asyncpg

    from tailor_core.bus import connect
    from tailor_core.testing.infra import test_infra

    with tempfile.TemporaryDirectory() as scratch, test_infra(Path(scratch)) as infra:
        pg = await asyncpg.connect(infra.pg_dsn)
        try:
            postgres = str(await pg.fetchval("SHOW server_version"))
        finally:
            await pg.close()
        nc = await connect(infra.nats_url, "bench-run-all")
        try:
            v = nc.connected_server_version
            nats = f"{v.major}.{v.minor}.{v.patch}" + (f"-{v.prerelease}" if v.prerelease else "")
        finally:
            await nc.close()
        return {"postgres_version": postgres, "nats_version": nats, "infra": infra.source}


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = cpu_facts()
    facts["memory_gib"] = memory_gib()
    facts["python_version"] = platform.python_version()
    facts["kernel"] = platform.release()
    try:
        facts |= asyncio.run(server_versions())
    except Exception as error:  # a report without the versions beats no report
        facts |= {"postgres_version": None, "nats_version": None, "servers_error": str(error)}
    facts["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    commit = git("rev-parse", "HEAD")
    facts["git_commit"] = commit or None
    facts["git_dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
    return facts


# --- figures -----------------------------------------------------------------------------------


def lookup(result: Mapping[str, Any] | None, dotted: str) -> float | None:
    value: Any = result
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def figure_rows(results: Mapping[str, Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    rows = []
    for f in FIGURES:
        result = results.get(f.script)
        value = lookup(result, f.source)
        limit = lookup(result, f.limit) if f.limit else None
        limit = limit * f.limit_scale if limit is not None else None
        ratio = value / limit if value is not None and limit else None
        rows.append({"figure": f, "value": value, "limit": limit, "ratio": ratio})
    return rows


def headline(
    rows: Sequence[Mapping[str, Any]], results: Mapping[str, Mapping[str, Any] | None]
) -> dict[str, float | None]:
    found: dict[str, float | None] = {row["figure"].key: row["value"] for row in rows}
    for key, script, source in EXTRA_KEYS:
        found[key] = lookup(results.get(script), source)
    return found


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "":
        return f"{value:.4f}"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def without_nan(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_nan(v) for v in value]
    return value


# --- plots -------------------------------------------------------------------------------------


def plot_latency(results: Mapping[str, Mapping[str, Any] | None], path: Path) -> bool:
    """Grouped bars (p50, p99, and the raw limit's p50 and p99) per latency benchmark, in
    ms on a log scale; False when no benchmark has figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = (
        ("p50", "", "#4c72b0", None),
        ("p99", "", "#dd8452", None),
        ("raw limit p50", "raw", "#a6bddb", "//"),
        ("raw limit p99", "raw", "#fdd0a2", "//"),
    )
    groups = []
    for group in LATENCY_GROUPS:
        result = results.get(group.script)
        mine = [lookup(result, f"{group.prefix}_{q}_ms") for q in ("p50", "p99")]
        raw = (
            [lookup(result, f"{group.raw_prefix}_{q}_ms") for q in ("p50", "p99")]
            if group.raw_prefix
            else [None, None]
        )
        if any(v is not None for v in mine):
            groups.append((group.label, [*mine, *raw]))
    if not groups:
        return False
    figure, axes = plt.subplots(figsize=(max(8.0, 1.25 * len(groups) + 2), 5.5))
    width = 0.2
    for index, (name, _, colour, hatch) in enumerate(series):
        xs = [g + (index - 1.5) * width for g in range(len(groups))]
        heights = [values[index] for _, values in groups]
        bars = axes.bar(
            [x for x, h in zip(xs, heights, strict=True) if h],
            [h for h in heights if h],
            width,
            label=name,
            color=colour,
            hatch=hatch,
            edgecolor="#555555" if hatch else colour,
            linewidth=0.5,
        )
        if index < 2:
            axes.bar_label(
                bars, labels=[number(h, "ms") for h in heights if h], fontsize=7, padding=1
            )
    axes.set_yscale("log")
    axes.set_ylabel("latency, ms (log scale)")
    axes.set_xticks(range(len(groups)), [label for label, _ in groups], fontsize=8)
    axes.set_title("Latency benchmarks: p50 and p99, next to the raw limit of the same run")
    axes.grid(axis="y", which="both", alpha=0.3)
    axes.set_axisbelow(True)
    axes.legend(fontsize=8, ncols=4, loc="upper left")
    axes.margins(y=0.15)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_quality(result: Mapping[str, Any] | None, path: Path) -> bool:
    """HR@10, NDCG@10 and Recall@20 per model; False without recommend_quality figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = {
        (model, metric): lookup(result, f"{metric}_{model}")
        for model, _ in QUALITY_MODELS
        for metric, _ in QUALITY_METRICS
    }
    if all(v is None for v in values.values()):
        return False
    figure, axes = plt.subplots(figsize=(8, 4.8))
    width = 0.26
    colours = ("#4c72b0", "#55a868", "#c44e52")
    for index, (metric, label) in enumerate(QUALITY_METRICS):
        heights = [values[(model, metric)] or 0.0 for model, _ in QUALITY_MODELS]
        bars = axes.bar(
            [m + (index - 1) * width for m in range(len(QUALITY_MODELS))],
            heights,
            width,
            label=label,
            color=colours[index],
        )
        axes.bar_label(bars, labels=[f"{h:.3f}" for h in heights], fontsize=7, padding=1)
    axes.set_xticks(range(len(QUALITY_MODELS)), [label for _, label in QUALITY_MODELS])
    axes.set_ylabel("score (higher is better)")
    protocol = (result or {}).get("protocol", {})
    axes.set_title(f"Offline quality, temporal split ({protocol.get('file', 'UCI Online Retail')})")
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.legend(fontsize=8)
    axes.margins(y=0.12)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


# --- the report --------------------------------------------------------------------------------


def markdown(
    rows: Sequence[Mapping[str, Any]],
    runs: Mapping[str, Mapping[str, Any]],
    machine: Mapping[str, Any],
    meta: Mapping[str, Any],
    plots: Sequence[str],
) -> str:
    lines = [
        "# Tailor benchmarks — latest run",
        "",
        f"`{meta['command']}` ({meta['mode']} run), {meta['date']}, "
        f"{meta['seconds']:.0f} s in all; {meta['failed']} of {meta['scripts']} scripts failed. "
        "Figures are for reading, never pass/fail: each sits next to the raw limit its "
        "script measured in the same run (ratio = figure / raw limit; for latencies, how "
        "many times the raw path's time).",
        "",
    ]
    for section, members in itertools.groupby(rows, key=lambda row: row["figure"].section):
        lines += [
            f"## {section}",
            "",
            "| figure | value | unit | raw limit | ratio |",
            "|---|---:|---|---|---:|",
        ]
        for row in members:
            f: Figure = row["figure"]
            if row["limit"] is not None:
                limit = f"{number(row['limit'], f.unit)} ({f.limit_label})"
            else:
                limit = f"— ({f.limit_label})" if f.limit else ""
            ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else ""
            value = number(row["value"], f.unit) if row["value"] is not None else "—"
            if row["value"] is None and f.script in runs:
                value += " (not measured)" if runs[f.script]["ok"] else " (failed)"
            elif row["value"] is None:
                value += " (not run)"
            lines.append(
                f"| {f.label} (`{f.key}`) | {value} | {f.unit or '—'} | {limit} | {ratio} |"
            )
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p.removesuffix('.png')}]({p})" for p in plots] + [""]
    lines += [
        "## Runs",
        "",
        "| script | arguments | seconds | outcome |",
        "|---|---|---:|---|",
    ]
    for run in runs.values():
        outcome = "ok" if run["ok"] else f"**failed**: {run['error']}".replace("|", "\\|")
        lines.append(
            f"| `{run['script']}` | `{' '.join(run['args'])}` | {run['seconds']:.1f} | {outcome} |"
        )
    lines += [
        "",
        f"Each script's stderr is in `{meta['logs']}/`; its full JSON under `scripts` in "
        "`latest.json`.",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu_model']}, {machine['cpu_count']} logical CPUs "
        f"({machine['cpus_usable']} usable by this run)",
        f"- memory: {machine['memory_gib']} GiB",
        f"- Python {machine['python_version']}, Linux {machine['kernel']}",
        f"- PostgreSQL {machine.get('postgres_version') or 'unknown'}, "
        f"NATS server {machine.get('nats_version') or 'unknown'} "
        f"(infra: {machine.get('infra', 'unknown')})",
        f"- date: {machine['date']}",
        f"- git commit: {machine['git_commit'] or 'unknown'}"
        + (" (with uncommitted changes)" if machine["git_dirty"] else ""),
        "",
    ]
    return "\n".join(lines)


def write_atomically(path: Path, text: str) -> None:
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: under 3 minutes")
    parser.add_argument("--only", help="comma-separated script names to run (default: all of them)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the results")
    args = parser.parse_args(argv)
    chosen = list(SCRIPTS)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {s.name for s in SCRIPTS}
        if unknown:
            parser.error(f"no such script: {', '.join(sorted(unknown))}")
        chosen = [s for s in SCRIPTS if s.name in wanted]
    out: Path = args.out
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {}
    for script in chosen:
        print(f"bench: {script.name} …", file=sys.stderr, flush=True)
        run = runs[script.name] = run_script(script, args.quick, logs)
        state = "ok" if run["ok"] else f"FAILED ({run['error']})"
        print(f"bench: {script.name} {state} in {run['seconds']:.1f} s", file=sys.stderr)
    results = {name: run.get("result") for name, run in runs.items()}
    machine = machine_facts()
    plots = []
    if plot_latency(results, out / "latency.png"):
        plots.append("latency.png")
    if plot_quality(results.get("recommend_quality"), out / "quality.png"):
        plots.append("quality.png")
    rows = figure_rows(results)
    failed = sum(not run["ok"] for run in runs.values())
    command = "make bench" + (" QUICK=1" if args.quick else "")
    meta = {
        "command": command,
        "mode": "quick" if args.quick else "full",
        "date": machine["date"],
        "seconds": time.perf_counter() - started,
        "scripts": len(runs),
        "failed": failed,
        "logs": str(logs.relative_to(ROOT)) if logs.is_relative_to(ROOT) else str(logs),
    }
    report: dict[str, Any] = {
        **headline(rows, results),
        "mode": meta["mode"],
        "seconds": meta["seconds"],
        "failed_scripts": [name for name, run in runs.items() if not run["ok"]],
        "machine": machine,
        "runs": {
            name: {k: v for k, v in run.items() if k != "result"} for name, run in runs.items()
        },
        "scripts": results,
    }
    write_atomically(out / "latest.json", json.dumps(without_nan(report), indent=2) + "\n")
    write_atomically(out / "latest.md", markdown(rows, runs, machine, meta, plots))
    print(
        f"bench: {len(runs)} scripts in {meta['seconds']:.0f} s, {failed} failed; "
        f"{out / 'latest.md'}",
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

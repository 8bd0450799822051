#!/usr/bin/env python3
"""Render chorus-bench results into Markdown tables and PNG plots.

``chorus-bench`` appends one JSON object per scenario run to a JSON-lines file
(``bench/results/latest.jsonl`` by default).  This script reads one or more such
files and

* rewrites the block between ``<!-- results:begin -->`` and
  ``<!-- results:end -->`` in ``BENCHMARKS.md`` with one table per scenario
  (``fanout``, ``rooms``, ``idle``) followed by links to the plots;
* draws ``latency-vs-rate.png`` (fanout runs: p50/p99/p999 latency against
  deliveries per second) and ``memory-vs-connections.png`` (idle runs: RSS per
  connection and total RSS against connections) into the plot directory.

Runs are keyed by their ``label``: when several lines share a label, the last
one read wins, so re-running a scenario replaces its earlier result.  Files are
read in the order given on the command line.

Runs of ``scripts/bench.sh --peers`` carry a ``server`` field (``chorus``,
``socketioxide``, ``socketio``) and a label that starts with it
(``socketioxide-fanout-1x1000-100mps``).  They are rendered apart, in one
side-by-side table per scenario: one row per server under each case (the label
without its server prefix), so the servers of one case sit together.

Runs of ``scripts/bench.sh --redis-cluster`` carry ``redis_topology``
(``one`` or ``cluster``) and ``redis_processes`` (each redis-server's role,
port, slots, CPU seconds and commands during the run, and a primary's keys at
its end).  They are rendered apart, in "One Redis versus a Redis Cluster":
one table with a row per Redis set-up under each case (the label without its
``-one-redis`` / ``-redis-cluster`` suffix), and one with a row per primary.

Fields that were not measured are ``null`` in the input and show as "—".

Only the standard library and matplotlib (see ``bench/requirements.txt``) are
needed; matplotlib is imported only when a plot is drawn.

Example::

    .venv-bench/bin/python bench/render.py bench/results/latest.jsonl \\
        --markdown BENCHMARKS.md --plots docs/bench/
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

BEGIN_MARKER = "<!-- results:begin -->"
END_MARKER = "<!-- results:end -->"

SCENARIOS = ("fanout", "rooms", "idle")
SCENARIO_TITLES = {
    "fanout": "Fan-out (one room, many members)",
    "rooms": "Many rooms",
    "idle": "Idle connections (memory)",
}

# Servers in side-by-side tables: chorus first, then its peers; any other
# server name after these, alphabetically.
SERVER_ORDER = ("chorus", "socketioxide", "socketio")

LATENCY_PLOT = "latency-vs-rate.png"
MEMORY_PLOT = "memory-vs-connections.png"

DASH = "—"
KIB = 1024.0
MIB = 1024.0 * 1024.0

Run = dict[str, Any]


# --------------------------------------------------------------------------
# Reading input
# --------------------------------------------------------------------------



def _utc(started_at):
    """A run's start (Unix seconds, or already a string) as UTC ISO 8601."""
    if isinstance(started_at, (int, float)):
        return datetime.datetime.fromtimestamp(started_at, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return str(started_at)

def warn(message: str) -> None:
    """Print a note to stderr, prefixed with the script's name."""
    print(f"render.py: {message}", file=sys.stderr)


def read_runs(paths: Iterable[Path]) -> tuple[list[Run], int]:
    """Read JSON-lines files in order and return ``(runs, lines_read)``.

    Blank lines are ignored.  A line that is not a JSON object (for example a
    half-written last line from an interrupted run) is reported on stderr and
    skipped.  A missing or unreadable file raises ``OSError``.
    """
    runs: list[Run] = []
    lines_read = 0
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                line = line.strip()
                if not line:
                    continue
                lines_read += 1
                try:
                    run = json.loads(line)
                except json.JSONDecodeError as err:
                    warn(f"{path}:{number}: skipping line that is not valid JSON ({err.msg})")
                    continue
                if not isinstance(run, dict):
                    warn(f"{path}:{number}: skipping line that is not a JSON object")
                    continue
                runs.append(run)
    return runs, lines_read


def run_key(run: Run) -> str:
    """Return the identity of a run: its label, or a fallback when it has none."""
    label = run.get("label")
    if label:
        return str(label)
    return f"{run.get('scenario')}@{run.get('started_at')}"


def latest_by_label(runs: Iterable[Run]) -> list[Run]:
    """Keep only the last run for each label (re-runs replace earlier ones)."""
    latest: dict[str, Run] = {}
    for run in runs:
        key = run_key(run)
        latest.pop(key, None)  # move a re-run to the position of its latest line
        latest[key] = run
    return list(latest.values())


def peer_case(run: Run) -> str | None:
    """The case of a side-by-side run (its label without the ``<server>-``
    prefix), or ``None`` for a run of chorus's own tables."""
    server = run.get("server")
    label = str(run.get("label", ""))
    if isinstance(server, str) and server and label.startswith(server + "-"):
        return label[len(server) + 1:]
    return None


def split_peer_runs(runs: Iterable[Run]) -> tuple[list[Run], list[Run]]:
    """Split runs into ``(chorus's own runs, side-by-side runs)``."""
    own: list[Run] = []
    peers: list[Run] = []
    for run in runs:
        (own if peer_case(run) is None else peers).append(run)
    return own, peers


def server_rank(server: str) -> tuple[int, str]:
    """Sort key of a server name in side-by-side tables."""
    if server in SERVER_ORDER:
        return (SERVER_ORDER.index(server), server)
    return (len(SERVER_ORDER), server)


def group_by_scenario(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Split runs by scenario; runs of unknown scenarios are reported and dropped."""
    groups: dict[str, list[Run]] = {name: [] for name in SCENARIOS}
    unknown: dict[str, int] = {}
    for run in runs:
        scenario = run.get("scenario")
        if scenario in groups:
            groups[scenario].append(run)
        else:
            unknown[str(scenario)] = unknown.get(str(scenario), 0) + 1
    for scenario, count in sorted(unknown.items()):
        warn(f"ignoring {count} run(s) of unknown scenario {scenario!r}")
    for name, members in groups.items():
        members.sort(key=sort_key_for(name))
    return groups


def num(value: Any) -> float | None:
    """Return ``value`` as a finite float, or ``None`` if null / non-numeric / NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def field(run: Run, *path: str) -> float | None:
    """Look up a numeric field by path, e.g. ``field(run, "latency_ms", "p99")``."""
    node: Any = run
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return num(node)


def connections(run: Run) -> float | None:
    """Connections of a run: the measured count, else the requested one."""
    measured = field(run, "connections")
    return measured if measured is not None else field(run, "params", "connections")


def sort_key_for(scenario: str) -> Callable[[Run], tuple]:
    """Return the row order for a scenario's table (nulls sort last)."""

    def opt(value: float | None) -> tuple[int, float]:
        return (1, 0.0) if value is None else (0, value)

    if scenario == "idle":
        return lambda run: (opt(connections(run)), run_key(run))
    return lambda run: (
        opt(field(run, "params", "rooms")),
        opt(field(run, "params", "members")),
        opt(field(run, "params", "rate")),
        opt(field(run, "deliveries_per_sec")),
        run_key(run),
    )


# --------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------


def fmt_int(value: float | None) -> str:
    """Format a count with thousands separators, "—" for null."""
    return DASH if value is None else f"{round(value):,}"


def fmt_dec(digits: int) -> Callable[[float | None], str]:
    """Return a formatter with ``digits`` decimals and thousands separators."""

    def fmt(value: float | None) -> str:
        return DASH if value is None else f"{value:,.{digits}f}"

    return fmt


def scaled(getter: Callable[[Run], float | None], divisor: float) -> Callable[[Run], float | None]:
    """Wrap a getter so that its value is divided by ``divisor`` (nulls stay null)."""

    def get(run: Run) -> float | None:
        value = getter(run)
        return None if value is None else value / divisor

    return get


def getter(*path: str) -> Callable[[Run], float | None]:
    """Return a function reading the numeric field at ``path`` from a run."""
    return lambda run: field(run, *path)


# A column: (header, value getter, formatter).
Column = tuple[str, Callable[[Run], float | None], Callable[[float | None], str]]

TRAFFIC_COLUMNS: list[Column] = [
    ("Connections", connections, fmt_int),
    ("Deliveries/s", getter("deliveries_per_sec"), fmt_int),
    ("p50 ms", getter("latency_ms", "p50"), fmt_dec(2)),
    ("p99 ms", getter("latency_ms", "p99"), fmt_dec(2)),
    ("p999 ms", getter("latency_ms", "p999"), fmt_dec(2)),
    ("Lost", getter("lost"), fmt_int),
    ("Duplicated", getter("duplicated"), fmt_int),
    ("Out of order", getter("out_of_order"), fmt_int),
    ("CPU s / M deliveries", getter("cpu_s_per_million_deliveries"), fmt_dec(2)),
    ("RSS/conn KiB", scaled(getter("rss_per_connection_bytes"), KIB), fmt_dec(1)),
    ("Send p99 ms", getter("send_latency_p99_ms"), fmt_dec(2)),
]

COLUMNS: dict[str, list[Column]] = {
    "fanout": TRAFFIC_COLUMNS,
    "rooms": TRAFFIC_COLUMNS,
    "idle": [
        ("Connections", connections, fmt_int),
        ("Server RSS MiB", scaled(getter("server_rss_bytes"), MIB), fmt_dec(1)),
        ("Baseline RSS MiB", scaled(getter("baseline_rss_bytes"), MIB), fmt_dec(1)),
        ("RSS/conn KiB", scaled(getter("rss_per_connection_bytes"), KIB), fmt_dec(1)),
        ("Connect+join CPU s", getter("connect_cpu_s"), fmt_dec(2)),
    ],
}


# Columns of the side-by-side tables, after "Case" and "Server".
PEER_TRAFFIC_COLUMNS: list[Column] = [
    ("Connections", connections, fmt_int),
    ("Deliveries/s", getter("deliveries_per_sec"), fmt_int),
    ("p50 ms", getter("latency_ms", "p50"), fmt_dec(2)),
    ("p99 ms", getter("latency_ms", "p99"), fmt_dec(2)),
    ("Node CPU s / M deliveries", getter("cpu_s_per_million_deliveries"), fmt_dec(2)),
    ("Lost", getter("lost"), fmt_int),
    ("Duplicated", getter("duplicated"), fmt_int),
    ("Out of order", getter("out_of_order"), fmt_int),
]

PEER_COLUMNS: dict[str, list[Column]] = {
    "fanout": PEER_TRAFFIC_COLUMNS,
    "rooms": PEER_TRAFFIC_COLUMNS,
    "idle": [
        ("Connections", connections, fmt_int),
        ("Server RSS MiB", scaled(getter("server_rss_bytes"), MIB), fmt_dec(1)),
        ("RSS/conn KiB", scaled(getter("rss_per_connection_bytes"), KIB), fmt_dec(1)),
        ("Connect+join CPU s", getter("connect_cpu_s"), fmt_dec(2)),
    ],
}


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f} ms"


def _latency(run: Run) -> str:
    return f"p50 {_ms(field(run, 'latency_ms', 'p50'))}, p99 {_ms(field(run, 'latency_ms', 'p99'))}"


def _efficiency(run: Run) -> str:
    per_cpu = field(run, "deliveries_per_cpu_s")
    rate = "—" if per_cpu is None else f"{per_cpu / 1000:,.0f} k"
    return f"{rate} ({fmt_int(field(run, 'lost'))} lost, {fmt_int(field(run, 'out_of_order'))} out of order)"


def _saturation(run: Run) -> str:
    return f"p99 {_ms(field(run, 'latency_ms', 'p99'))}, {fmt_int(field(run, 'deliveries_per_sec'))} deliveries/s"


def _p99_at_most(limit: float) -> Callable[[Run], bool]:
    def check(run: Run) -> bool:
        p99 = field(run, "latency_ms", "p99")
        return p99 is not None and p99 <= limit and not field(run, "lost")
    return check


def _efficient(run: Run) -> bool:
    per_cpu = field(run, "deliveries_per_cpu_s")
    return per_cpu is not None and per_cpu >= 1.6e6 and not field(run, "lost") and not field(run, "out_of_order")


def _at_most(path: tuple[str, ...], limit: float) -> Callable[[Run], bool]:
    def check(run: Run) -> bool:
        value = field(run, *path)
        return value is not None and value <= limit
    return check


# The targets of issue 14 ("Latency at ordinary load, and efficiency at
# saturation"), each read from one case of a side-by-side run: (what, case,
# how a run's figure reads, target, whether chorus's run meets it).
TARGETS: list[tuple[str, str, Callable[[Run], str], str, Callable[[Run], bool]]] = [
    ("rooms: 2 000 clients in rooms of 10, 1 msg/s each", "rooms-2000x1mps",
     _latency, "p99 ≤ 1 ms", _p99_at_most(1.0)),
    ("fanout: 1 room × 1 000, 100 msg/s", "fanout-1x1000-100mps",
     _latency, "p99 ≤ 10 ms", _p99_at_most(10.0)),
    ("fanout: 1 room × 1 000, 1 000 msg/s: deliveries per node CPU-second", "fanout-1x1000-1000mps",
     _efficiency, "≥ 1.6 M, 0 lost, 0 out of order", _efficient),
    ("idle: 10 000 connections, RSS per connection", "idle-10000",
     lambda run: f"{fmt_dec(1)(scaled(getter('rss_per_connection_bytes'), KIB)(run))} KiB", "≤ 4 KiB",
     lambda run: (field(run, "rss_per_connection_bytes") or math.inf) <= 4 * KIB),
    ("idle: node CPU-seconds to connect and join 10 000 clients", "idle-10000",
     lambda run: f"{fmt_dec(2)(field(run, 'connect_cpu_s'))} s", "≤ 0.77 s", _at_most(("connect_cpu_s",), 0.77)),
    ("rooms: 10 000 clients × 1 msg/s (10 000 msg/s through Redis)", "rooms-10000x1mps",
     _saturation, "p99 ≤ 50 ms, not saturated", _p99_at_most(50.0)),
]


def render_targets(peer_runs: list[Run]) -> list[str]:
    """The table of issue 14's targets: each server's figure for the case,
    the target, and whether chorus meets it. Empty without side-by-side runs."""
    by_case: dict[str, dict[str, Run]] = {}
    for run in peer_runs:
        by_case.setdefault(peer_case(run) or "", {})[str(run.get("server"))] = run
    servers = sorted({server for runs in by_case.values() for server in runs}, key=server_rank)
    if not servers:
        return []
    header = ["scenario (2 nodes + Redis, 2 cores)"] + servers + ["target", "chorus meets it"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join([":---"] * len(header)) + " |"]
    for what, case, reads, target, meets in TARGETS:
        runs = by_case.get(case, {})
        if not runs:
            continue
        cells = [what] + [reads(runs[server]) if server in runs else "—" for server in servers]
        chorus = runs.get("chorus")
        cells += [target, "—" if chorus is None else ("yes" if meets(chorus) else "**no**")]
        lines.append("| " + " | ".join(md_escape(cell) for cell in cells) + " |")
    return lines


def md_escape(text: str) -> str:
    """Escape characters that would break a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_table(runs: list[Run], columns: list[Column]) -> list[str]:
    """Render runs as a Markdown table (label column first, numbers right-aligned)."""
    header = ["Label"] + [name for name, _, _ in columns]
    align = [":---"] + ["---:"] * len(columns)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for run in runs:
        cells = [f"`{md_escape(run_key(run))}`"]
        cells += [fmt(get(run)) for _, get, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_peer_table(runs: list[Run], columns: list[Column]) -> list[str]:
    """Render side-by-side runs: one row per server, the rows of a case
    together and the case named on its first row only."""
    cases: dict[str, list[Run]] = {}
    for run in runs:  # already in the scenario's row order
        cases.setdefault(peer_case(run) or run_key(run), []).append(run)
    header = ["Case", "Server"] + [name for name, _, _ in columns]
    align = [":---", ":---"] + ["---:"] * len(columns)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for case, members in cases.items():
        members.sort(key=lambda run: server_rank(str(run.get("server"))))
        for position, run in enumerate(members):
            cells = [f"`{md_escape(case)}`" if position == 0 else "", md_escape(str(run.get("server")))]
            cells += [fmt(get(run)) for _, get, fmt in columns]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


# --------------------------------------------------------------------------
# One Redis versus a Redis Cluster
# --------------------------------------------------------------------------

# Label suffixes of scripts/bench.sh --redis-cluster, by redis_topology.
TOPOLOGY_SUFFIXES = {"one": "-one-redis", "cluster": "-redis-cluster"}
TOPOLOGY_ORDER = ("one", "cluster")


def is_redis_run(run: Run) -> bool:
    """Whether a run is one of ``scripts/bench.sh --redis-cluster``."""
    return run.get("redis_topology") in TOPOLOGY_SUFFIXES and isinstance(run.get("redis_processes"), list)


def split_redis_runs(runs: Iterable[Run]) -> tuple[list[Run], list[Run]]:
    """Split runs into ``(the others, runs of one Redis versus a cluster)``."""
    others: list[Run] = []
    redis: list[Run] = []
    for run in runs:
        (redis if is_redis_run(run) else others).append(run)
    return others, redis


def redis_case(run: Run) -> str:
    """The case of a one-Redis-versus-cluster run: its label without the
    topology suffix."""
    label = run_key(run)
    suffix = TOPOLOGY_SUFFIXES.get(str(run.get("redis_topology")), "")
    return label[: -len(suffix)] if suffix and label.endswith(suffix) else label


def first_slot(process: dict[str, Any]) -> int:
    """The lowest slot a primary serves (0 for a lone Redis)."""
    match = re.match(r"\s*(\d+)", str(process.get("slots") or ""))
    return int(match.group(1)) if match else 0


def primaries(run: Run) -> list[dict[str, Any]]:
    """A run's primaries (a lone Redis is one), in slot order, then port."""
    processes = [p for p in run.get("redis_processes") or [] if isinstance(p, dict)]
    found = [p for p in processes if p.get("role") == "primary"]
    return sorted(found, key=lambda p: (first_slot(p), num(p.get("port")) or 0.0))


def replicas_of(run: Run, primary: dict[str, Any]) -> list[dict[str, Any]]:
    """The replicas that follow ``primary``."""
    return [
        p for p in run.get("redis_processes") or []
        if isinstance(p, dict) and p.get("role") == "replica" and p.get("primary_port") == primary.get("port")
    ]


def replica_cpu(run: Run) -> float | None:
    """CPU seconds of every replica of a run together; ``None`` without any."""
    values = [num(p.get("cpu_s")) for p in run.get("redis_processes") or []
              if isinstance(p, dict) and p.get("role") == "replica"]
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def key_field(process: dict[str, Any], name: str) -> float | None:
    """A field of a primary's ``keys`` (``dbsize``, ``online`` …)."""
    keys = process.get("keys")
    return num(keys.get(name)) if isinstance(keys, dict) else None


def per_primary(run: Run, value: Callable[[dict[str, Any]], float | None],
                fmt: Callable[[float | None], str]) -> str:
    """One figure per primary, in slot order, joined by " / "."""
    found = primaries(run)
    return " / ".join(fmt(value(p)) for p in found) if found else DASH


def rest_of_machine(run: Run) -> float | None:
    """Busy CPU seconds of the machine during the run beyond the nodes,
    Redis and the load generator: whatever else ran meanwhile."""
    parts = [field(run, name) for name in ("machine_cpu_s", "server_cpu_s", "redis_cpu_s", "bench_cpu_s")]
    if any(part is None for part in parts):
        return None
    machine, nodes, redis, bench = parts
    return machine - nodes - redis - bench


def load_at_start(run: Run) -> str:
    """The 1-minute load average when the run started."""
    load = run.get("loadavg_at_start")
    value = num(load[0]) if isinstance(load, list) and load else None
    return fmt_dec(2)(value)


def topology_name(run: Run) -> str:
    """How a row names its Redis set-up."""
    if run.get("redis_topology") == "one":
        return "one Redis"
    count = len(primaries(run))
    replicas = sum(1 for p in run.get("redis_processes") or [] if isinstance(p, dict) and p.get("role") == "replica")
    return f"cluster, {count} primaries + {replicas} replicas"


def redis_cases(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """Runs by case (in case order), one Redis before the cluster in each."""
    cases: dict[str, list[Run]] = {}
    for run in sorted(runs, key=sort_key_for("rooms")):
        cases.setdefault(redis_case(run), []).append(run)
    for members in cases.values():
        members.sort(key=lambda run: TOPOLOGY_ORDER.index(str(run.get("redis_topology"))))
    return list(cases.items())


def render_redis_comparison(runs: list[Run]) -> list[str]:
    """The one-Redis-versus-cluster tables: a row per set-up, then a row per
    primary with its replicas, keys and channels."""
    header = [
        "Case", "Redis", "Deliveries/s", "p50 ms", "p99 ms", "Lost", "chorus CPU s", "Redis CPU s",
        "CPU s per primary", "Replicas CPU s", "Keys per primary", "Load (1 min) at start",
        "Rest of the machine CPU s",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join([":---", ":---"] + ["---:"] * (len(header) - 2)) + " |",
    ]
    two = fmt_dec(2)
    for case, members in redis_cases(runs):
        for position, run in enumerate(members):
            cells = [
                f"`{md_escape(case)}`" if position == 0 else "",
                topology_name(run),
                fmt_int(field(run, "deliveries_per_sec")),
                two(field(run, "latency_ms", "p50")),
                two(field(run, "latency_ms", "p99")),
                fmt_int(field(run, "lost")),
                two(field(run, "server_cpu_s")),
                two(field(run, "redis_cpu_s")),
                per_primary(run, lambda p: num(p.get("cpu_s")), two),
                two(replica_cpu(run)),
                per_primary(run, lambda p: key_field(p, "dbsize"), fmt_int),
                load_at_start(run),
                fmt_dec(1)(rest_of_machine(run)),
            ]
            lines.append("| " + " | ".join(cells) + " |")

    header = [
        "Case", "Redis", "Primary", "CPU s", "Its replica's CPU s", "Commands", "Keys",
        "`*:online`", "`*:rooms`", "`*:nodes`", "Shard channels", "Channels",
    ]
    lines += [
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join([":---", ":---", ":---"] + ["---:"] * (len(header) - 3)) + " |",
    ]
    for case, members in redis_cases(runs):
        first = True
        for run in members:
            for index, primary in enumerate(primaries(run)):
                replicas = [num(p.get("cpu_s")) for p in replicas_of(run, primary)]
                replicas = [value for value in replicas if value is not None]
                slots = primary.get("slots")
                cells = [
                    f"`{md_escape(case)}`" if first else "",
                    topology_name(run) if index == 0 else "",
                    md_escape(f"slots {slots}") if slots else "all",
                    two(num(primary.get("cpu_s"))),
                    two(sum(replicas)) if replicas else DASH,
                    fmt_int(num(primary.get("commands"))),
                    fmt_int(key_field(primary, "dbsize")),
                    fmt_int(key_field(primary, "online")),
                    fmt_int(key_field(primary, "rooms")),
                    fmt_int(key_field(primary, "nodes")),
                    fmt_int(key_field(primary, "shard_channels")),
                    fmt_int(key_field(primary, "channels")),
                ]
                lines.append("| " + " | ".join(cells) + " |")
                first = False
    return lines


def render_markdown(
    groups: dict[str, list[Run]],
    sources: list[Path],
    plot_links: list[tuple[str, str]],
    peer_groups: dict[str, list[Run]] | None = None,
    redis_runs: list[Run] | None = None,
) -> str:
    """Build the Markdown that goes between the result markers.

    ``plot_links`` is a list of ``(alt text, relative path)`` for the plots that
    were drawn; ``peer_groups`` holds the side-by-side runs by scenario and
    ``redis_runs`` those of one Redis versus a Redis Cluster.  The output is
    deterministic for a given input (no clock time).
    """
    peer_groups = peer_groups or {name: [] for name in SCENARIOS}
    redis_runs = redis_runs or []
    every = [run for g in (groups, peer_groups) for runs in g.values() for run in runs] + redis_runs
    total = len(every)
    started = sorted(_utc(run["started_at"]) for run in every if run.get("started_at"))
    source_list = ", ".join(f"`{path.as_posix()}`" for path in sources)
    summary = f"_Generated by `bench/render.py` from {source_list}: {total} run(s)"
    if started:
        summary += f", started {started[0]}" + (f" to {started[-1]}" if started[-1] != started[0] else "")
    lines = [summary + "._", ""]

    if any(peer_groups.values()):
        servers = sorted(
            {str(run.get("server")) for runs in peer_groups.values() for run in runs},
            key=server_rank,
        )
        targets = render_targets([run for runs in peer_groups.values() for run in runs])
        if targets:
            lines.append("### Targets of issue 14, from the side-by-side run")
            lines.append("")
            lines.extend(targets)
            lines.append("")
        lines.append(f"### Side by side: {', '.join(servers)}")
        lines.append("")
        lines.append(
            "_Each server as two nodes over one Redis, the same scenarios in one run of "
            "`scripts/bench.sh --peers`; node CPU is both nodes' together._"
        )
        lines.append("")
        for scenario in SCENARIOS:
            if peer_groups[scenario]:
                lines.append(f"#### {SCENARIO_TITLES[scenario]}")
                lines.append("")
                lines.extend(render_peer_table(peer_groups[scenario], PEER_COLUMNS[scenario]))
                lines.append("")

    for scenario in SCENARIOS:
        if not groups[scenario] and (any(peer_groups.values()) or redis_runs):
            continue  # a side-by-side or one-Redis-versus-cluster run only: no empty sections after it
        lines.append(f"### {SCENARIO_TITLES[scenario]}")
        lines.append("")
        if groups[scenario]:
            lines.extend(render_table(groups[scenario], COLUMNS[scenario]))
        else:
            lines.append(f"_No `{scenario}` runs in these results._")
        lines.append("")

    if redis_runs:
        lines.append("### One Redis versus a Redis Cluster")
        lines.append("")
        lines.append(
            "_The rooms scenario with two nodes over one Redis, then over a Redis Cluster of 3 primaries "
            "and 3 replicas, in one run of `scripts/bench.sh --redis-cluster`. CPU seconds are those used "
            "during the run (sending and settling); a primary's keys and channels are counted at its end, "
            "with every client still connected. Per primary, in slot order._"
        )
        lines.append("")
        lines.extend(render_redis_comparison(redis_runs))
        lines.append("")

    if plot_links:
        lines.append("### Plots")
        lines.append("")
        for alt, link in plot_links:
            lines.append(f"![{alt}]({link})")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def splice_markdown(existing: str | None, content: str) -> str:
    """Put ``content`` between the result markers of ``existing``.

    A missing file (``None``) becomes just the markers and the content; a file
    without markers gets them appended at its end.  Raises ``ValueError`` when
    only one marker is present or they are out of order, rather than guessing
    which part of the file may be overwritten.
    """
    block = f"{BEGIN_MARKER}\n{content.rstrip()}\n{END_MARKER}"
    if existing is None:
        return block + "\n"
    begin = existing.find(BEGIN_MARKER)
    end = existing.find(END_MARKER)
    if begin == -1 and end == -1:
        prefix = existing.rstrip("\n")
        return (prefix + "\n\n" if prefix else "") + block + "\n"
    if begin == -1 or end == -1 or end < begin:
        raise ValueError(
            f"expected {BEGIN_MARKER} followed by {END_MARKER}; "
            "found only one of them or the wrong order"
        )
    return existing[:begin] + block + existing[end + len(END_MARKER):]


def read_markdown(path: Path) -> str | None:
    """Return the text of the Markdown file at ``path``, or ``None`` if it does not exist."""
    return path.read_text(encoding="utf-8") if path.exists() else None


def write_markdown(path: Path, existing: str | None, content: str) -> None:
    """Write ``existing`` with ``content`` spliced between the markers to ``path``."""
    updated = splice_markdown(existing, content)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(updated, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------


def pyplot():
    """Import matplotlib with the non-interactive Agg backend and return pyplot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def si_formatter():
    """Return a tick formatter that writes 1500 as 1.5k and 2000000 as 2M."""
    from matplotlib.ticker import FuncFormatter

    def fmt(value: float, _pos: int) -> str:
        for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= limit:
                return f"{value / limit:.3g}{suffix}"
        return f"{value:.3g}"

    return FuncFormatter(fmt)


def latency_formatter():
    """Return a tick formatter for milliseconds on a log axis (0.5, 1, 10, 100)."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _pos: f"{value:g}")


def new_figure(plt):
    """Create the standard 8x4.5 inch figure with one axis."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.grid(True, which="major", alpha=0.35)
    return fig, ax


def plot_latency_vs_rate(runs: list[Run], out: Path) -> bool:
    """Draw p50/p99/p999 latency against deliveries/s for fanout runs.

    Returns ``False`` (and draws nothing) when no run has both a rate and a
    latency to show.
    """
    points = [run for run in runs if field(run, "deliveries_per_sec") is not None]
    points.sort(key=lambda run: field(run, "deliveries_per_sec") or 0.0)
    # Runs that differ only in their rate form one line: the label without
    # its "<rate>mps" part names the setting (e.g. "-no-write-delay").
    settings: dict[str, list[Run]] = {}
    for run in points:
        setting = re.sub(r"-?[0-9.]+mps", "", str(run.get("label", ""))).strip("-")
        settings.setdefault(setting, []).append(run)
    series = []
    for setting, group in settings.items():
        suffix = "" if len(settings) == 1 else f" {setting}"
        for name, key, style in (("p50", "p50", "o-"), ("p99", "p99", "s-"), ("p999", "p999", "^--")):
            xy = [
                (field(run, "deliveries_per_sec"), field(run, "latency_ms", key))
                for run in group
            ]
            xy = [(x, y) for x, y in xy if y is not None and y > 0]
            if xy:
                series.append((name + suffix, style, xy))
    if not series:
        return False

    plt = pyplot()
    fig, ax = new_figure(plt)
    for name, style, xy in series:
        ax.plot([x for x, _ in xy], [y for _, y in xy], style, label=name, linewidth=1.8, markersize=6)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(latency_formatter())
    ax.xaxis.set_major_formatter(si_formatter())
    ax.grid(True, which="minor", axis="y", alpha=0.12)
    ax.set_xlabel("deliveries per second")
    ax.set_ylabel("delivery latency (ms, log scale)")
    ax.set_title("Fan-out: delivery latency vs. delivery rate")
    ax.legend(title="percentile", loc="upper left")
    ax.set_xlim(left=0, right=max(x for _, _, xy in series for x, _ in xy) * 1.08)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True



def plot_on_axis(ax, points, style, color, label):
    """Draws `points` on `ax` (its own y axis, coloured and labelled like the
    line) and returns the line's legend handles."""
    handles = []
    if points:
        handles = ax.plot(
            [x for x, _ in points], [y for _, y in points], style,
            color=color, linewidth=1.8, markersize=6, label=label,
        )
        ax.set_ylim(bottom=0, top=max(y for _, y in points) * 1.25)
    ax.set_ylabel(label, color=color)
    ax.tick_params(axis="y", colors=color)
    return handles

def plot_memory_vs_connections(runs: list[Run], out: Path) -> bool:
    """Draw RSS per connection (KiB) and total RSS (MiB) against connections.

    Returns ``False`` (and draws nothing) when no idle run has a connection
    count and a memory figure.
    """
    points = [run for run in runs if connections(run) is not None]
    points.sort(key=lambda run: connections(run) or 0.0)
    per_conn = [
        (connections(run), field(run, "rss_per_connection_bytes"))
        for run in points
    ]
    per_conn = [(x, y / KIB) for x, y in per_conn if y is not None]
    total = [(connections(run), field(run, "server_rss_bytes")) for run in points]
    total = [(x, y / MIB) for x, y in total if y is not None]
    if not per_conn and not total:
        return False

    plt = pyplot()
    fig, ax = new_figure(plt)
    handles = plot_on_axis(ax, per_conn, "o-", "tab:blue", "RSS per connection (KiB)")
    ax.set_xlabel("open connections")
    ax.xaxis.set_major_formatter(si_formatter())
    ax.set_xlim(left=0, right=max(x for x, _ in per_conn + total) * 1.05)
    handles += plot_on_axis(ax.twinx(), total, "s--", "tab:orange", "server RSS total (MiB)")

    ax.set_title("Idle connections: server memory")
    ax.legend(handles=handles, loc="upper left")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def draw_plots(groups: dict[str, list[Run]], plot_dir: Path) -> list[tuple[str, Path]]:
    """Draw every plot that has data; return ``(alt text, path)`` of those drawn."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    drawn: list[tuple[str, Path]] = []
    jobs = (
        ("fanout", LATENCY_PLOT, "Fan-out latency vs. deliveries per second", plot_latency_vs_rate),
        ("idle", MEMORY_PLOT, "Idle memory vs. connections", plot_memory_vs_connections),
    )
    for scenario, name, alt, draw in jobs:
        out = plot_dir / name
        if draw(groups[scenario], out):
            drawn.append((alt, out))
        else:
            warn(f"skipping {name}: no {scenario} runs with the data it needs")
    return drawn


def link_from(markdown: Path, target: Path) -> str:
    """Return the path of ``target`` relative to the Markdown file's folder, with '/'."""
    base = markdown.resolve().parent
    return Path(os.path.relpath(target.resolve(), base)).as_posix()


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="render.py",
        description=(
            "Render chorus-bench JSON-lines results into Markdown tables (between "
            f"{BEGIN_MARKER} and {END_MARKER}) and PNG plots. When several lines "
            "share a label, the last one wins."
        ),
    )
    parser.add_argument(
        "inputs", nargs="*", type=Path, metavar="RESULTS.jsonl",
        help="JSON-lines files from chorus-bench, read in order (default: bench/results/latest.jsonl)",
    )
    parser.add_argument(
        "--markdown", type=Path, default=Path("BENCHMARKS.md"), metavar="PATH",
        help="Markdown file to update between the result markers (default: %(default)s)",
    )
    parser.add_argument(
        "--plots", type=Path, default=Path("docs/bench"), metavar="DIR",
        help="directory for the PNG plots (default: %(default)s/)",
    )
    parser.add_argument(
        "--no-plots", action="store_true",
        help="only update the Markdown; draw no plots and link none",
    )
    args = parser.parse_args(argv)
    if not args.inputs:
        args.inputs = [Path("bench/results/latest.jsonl")]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the renderer; return the process exit code."""
    args = parse_args(argv)
    try:
        raw, lines_read = read_runs(args.inputs)
    except OSError as err:
        warn(f"cannot read results: {err}")
        return 1
    runs = latest_by_label(raw)
    if not runs:
        warn("no runs found in " + ", ".join(str(p) for p in args.inputs) + "; nothing written")
        return 1
    replaced = len(raw) - len(runs)
    own, peers = split_peer_runs(runs)
    own, redis_runs = split_redis_runs(own)
    groups = group_by_scenario(own)
    peer_groups = group_by_scenario(peers)

    # Check the Markdown file before drawing anything, so a bad file changes nothing.
    try:
        existing = read_markdown(args.markdown)
        splice_markdown(existing, "")
    except (OSError, ValueError) as err:
        warn(f"{args.markdown}: {err}; nothing written")
        return 1

    links: list[tuple[str, str]] = []
    if not args.no_plots:
        for alt, path in draw_plots(groups, args.plots):
            links.append((alt, link_from(args.markdown, path)))
            print(f"wrote {path}", file=sys.stderr)

    content = render_markdown(groups, args.inputs, links, peer_groups, redis_runs)
    try:
        write_markdown(args.markdown, existing, content)
    except OSError as err:
        warn(f"{args.markdown}: cannot write: {err}")
        return 1
    counts = ", ".join(f"{len(groups[s])} {s}" for s in SCENARIOS)
    if peers:
        counts += f", {len(peers)} side by side"
    if redis_runs:
        counts += f", {len(redis_runs)} one Redis versus a cluster"
    note = f" ({replaced} superseded by re-runs)" if replaced else ""
    print(f"wrote {args.markdown}: {counts} from {lines_read} line(s){note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

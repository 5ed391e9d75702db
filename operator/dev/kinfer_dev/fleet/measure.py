"""What `kinfer bench operator` reads, as pure functions: /proc figures, the operator's /metrics,
the API server's audit log and Prometheus' query log."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# Audit verbs (lower case, as the API server logs them) and the operator's metric's (upper).
READ_VERBS = frozenset({"get", "list"})
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection", "post", "put"})
WATCH_VERB = "watch"


# -- /proc --------------------------------------------------------------------------
def cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) of a /proc/<pid>/stat line."""
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def parent_pid(stat: str) -> int:
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def rss_bytes(status: str) -> int:
    """VmRSS of a /proc/<pid>/status text (0 when absent: a zombie)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            return int(value) * {"kB": 1024, "mB": 1024**2}.get(unit, 1)
    return 0


def cpu_percent(ticks: int, seconds: float, ticks_per_s: int) -> float:
    """CPU time over wall time, in % of one core."""
    return 100.0 * ticks / ticks_per_s / seconds if seconds > 0 else 0.0


def process_tree(root: int, proc: Path = Path("/proc")) -> list[int]:
    """root and its descendants (an --operator-command may be a wrapper around the operator)."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            children.setdefault(parent_pid((entry / "stat").read_text()), []).append(
                int(entry.name)
            )
        except (OSError, ValueError):
            continue
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


@dataclass(frozen=True)
class ProcessSample:
    cpu_ticks: int
    rss_bytes: int


def sample_tree(root: int, proc: Path = Path("/proc")) -> ProcessSample:
    ticks = rss = 0
    for pid in process_tree(root, proc):
        try:
            ticks += cpu_ticks((proc / str(pid) / "stat").read_text())
            rss += rss_bytes((proc / str(pid) / "status").read_text())
        except (OSError, ValueError):
            continue  # it exited between the listing and the read
    return ProcessSample(ticks, rss)


# -- the operator's /metrics --------------------------------------------------------
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text exposition: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return found


def has_metric(samples: Samples, name: str) -> bool:
    return any(sample == name for sample, _ in samples)


def delta(before: Samples, after: Samples, name: str, by: str | None = None) -> dict[str, float]:
    """Increase of a counter over a window, summed by one label (by=None: {"": total})."""
    totals: dict[str, float] = {}
    for (sample, labels), value in after.items():
        if sample != name:
            continue
        key = dict(labels).get(by, "") if by else ""
        increase = value - before.get((sample, labels), 0.0)
        totals[key] = totals.get(key, 0.0) + increase
    return totals


def histogram_quantile(quantile: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts {le: count} (le may be
    inf): linear within the bucket; None when the histogram is empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = quantile * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # in +Inf: the highest finite bound, as Prometheus says
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return bounds[-1]


def bucket_deltas(before: Samples, after: Samples, name: str) -> dict[float, float]:
    """{le: increase} of a histogram's buckets over a window."""
    by_le = delta(before, after, f"{name}_bucket", by="le")
    return {float(le): count for le, count in by_le.items()}


def requests_by_kind(by_verb: dict[str, float]) -> dict[str, float]:
    """Reads (get, list), writes and watches from counts by verb (either case)."""
    kinds = {"reads": 0.0, "writes": 0.0, "watches": 0.0}
    for verb, count in by_verb.items():
        verb = verb.lower()
        if verb in READ_VERBS:
            kinds["reads"] += count
        elif verb == WATCH_VERB:
            kinds["watches"] += count
        elif verb in WRITE_VERBS:
            kinds["writes"] += count
    return kinds


# -- the logs the servers keep ------------------------------------------------------
def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def audit_verbs(lines: Iterable[str], user: str, start_s: float, end_s: float) -> dict[str, float]:
    """Requests of `user` received within [start_s, end_s), by verb, from an audit log."""
    verbs: Counter[str] = Counter()
    for line in lines:
        try:
            event = json.loads(line)
            received = _timestamp(event["requestReceivedTimestamp"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by the reader, or not an event
        if (event.get("user") or {}).get("username") != user:
            continue
        if start_s <= received < end_s:
            verbs[str(event.get("verb"))] += 1
    return {verb: float(count) for verb, count in verbs.items()}


def logged_queries(lines: Iterable[str], start_s: float, end_s: float) -> int:
    """Queries Prometheus' query log holds within [start_s, end_s)."""
    count = 0
    for line in lines:
        try:
            entry = json.loads(line)
            when = _timestamp(entry["ts"])
        except (ValueError, KeyError, TypeError):
            continue
        if "params" in entry and start_s <= when < end_s:
            count += 1
    return count


def read_from(path: Path, offset: int) -> list[str]:
    """The whole lines a log gained after `offset` bytes."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()


def size_of(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0

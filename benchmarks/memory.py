"""Resident memory of the web (gunicorn) and worker (celery) processes during a run.

A background thread samples every process descended from this one (the benchmark starts
gunicorn and celery as its children) and keeps, per group, the largest single process and the
largest sum seen. Uses psutil when it is installed, else reads ``/proc`` directly.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

try:  # optional: the /proc fallback gives the same figures on Linux
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

GROUPS = {"web": "gunicorn", "worker": "celery"}


def _descendants_proc(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rss_proc(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return cmdline, int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def snapshot() -> dict[str, list[int]]:
    """RSS in bytes of every web and worker process descended from this process, by group."""
    groups: dict[str, list[int]] = {name: [] for name in GROUPS}
    if psutil is not None:
        samples = []
        for proc in psutil.Process().children(recursive=True):
            try:
                samples.append((" ".join(proc.cmdline()), proc.memory_info().rss))
            except psutil.Error:
                continue
    else:
        samples = [s for pid in _descendants_proc(os.getpid()) if (s := _rss_proc(pid))]
    for cmdline, rss in samples:
        for name, marker in GROUPS.items():
            if marker in cmdline and "wrk" not in cmdline.split(" ", 1)[0]:
                groups[name].append(rss)
    return groups


@dataclass
class Peak:
    largest: int = 0  # bytes, the largest single process
    total: int = 0  # bytes, the largest sum over the group's processes at one sample
    processes: int = 0  # the most processes seen at once


@dataclass
class Sampler:
    """``with Sampler() as s:`` samples every ``interval`` seconds until the block ends."""

    interval: float = 1.0
    peaks: dict[str, Peak] = field(default_factory=lambda: {n: Peak() for n in GROUPS})
    series: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        groups = snapshot()
        totals = {}
        for name, values in groups.items():
            peak = self.peaks[name]
            peak.largest = max(peak.largest, max(values, default=0))
            peak.total = max(peak.total, sum(values))
            peak.processes = max(peak.processes, len(values))
            totals[name] = sum(values)
        self.series.append((time.monotonic(), totals))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


SOURCE = "psutil" if psutil is not None else "/proc"

"""Resident memory of the web (granian or gunicorn) and worker (celery) processes during a run.

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

# A marker in a process's command line, or in its parent's (granian's workers are
# multiprocessing children whose own command line names neither).
GROUPS = {"web": ("gunicorn", "worker.infra.web_server"), "worker": ("celery",)}


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


def _with_parent(pid: int) -> tuple[str, int] | None:
    sample = _rss_proc(pid)
    if sample is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{parent}/cmdline", "rb") as handle:
            above = handle.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        above = ""
    return sample[0] + " " + above, sample[1]


def snapshot() -> dict[str, list[int]]:
    """RSS in bytes of every web and worker process descended from this process, by group."""
    groups: dict[str, list[int]] = {name: [] for name in GROUPS}
    if psutil is not None:
        samples = []
        for proc in psutil.Process().children(recursive=True):
            try:
                parent = proc.parent()
                above = " ".join(parent.cmdline()) if parent is not None else ""
                samples.append((" ".join(proc.cmdline()) + " " + above, proc.memory_info().rss))
            except psutil.Error:
                continue
    else:
        samples = [s for pid in _descendants_proc(os.getpid()) if (s := _with_parent(pid))]
    for cmdline, rss in samples:
        for name, markers in GROUPS.items():
            if any(m in cmdline for m in markers) and "wrk" not in cmdline.split(" ", 1)[0]:
                groups[name].append(rss)
                break
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

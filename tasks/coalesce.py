"""Coalesced sends: one message for any number of requests made close together.

The web process stores events one request at a time but the worker takes them in batches, so
one "process what is pending" message per few milliseconds is enough however many requests
there were. ``kick()`` only sets a flag; a background thread (started lazily, and again in a
forked child, where threads do not survive) clears it and sends. Every kick is followed by a
send that starts after it — the flag is cleared before the send, never after — so no event
stored before a kick can be missed by the task that send starts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Coalescer:
    def __init__(self, send: Callable[[], None], interval: float) -> None:
        self._send = send
        self._interval = interval
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None

    def kick(self) -> None:
        """Ask for a send soon. Never blocks on the broker and never raises."""
        if self._pid != os.getpid():
            self._start()
        self._wanted.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            # A fresh Event too: a child forked mid-wait must not share the parent's state.
            self._wanted = threading.Event()
            threading.Thread(target=self._run, name="coalesced-send", daemon=True).start()
            self._pid = os.getpid()

    def _run(self) -> None:
        wanted = self._wanted
        while True:
            wanted.wait()
            wanted.clear()
            try:
                self._send()
            except Exception:  # the sender logs its own failures; never let the thread die
                log.exception("coalesced send failed")
            time.sleep(self._interval)

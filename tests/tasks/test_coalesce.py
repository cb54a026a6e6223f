"""The receiver's coalesced enqueue: many kicks, few sends, and never a kick left unsent."""

from __future__ import annotations

import os
import threading
import time

from tasks.coalesce import Coalescer
from tests.support.processes import wait_until


def test_kicks_close_together_share_one_send_and_a_later_kick_gets_its_own() -> None:
    sent: list[float] = []
    coalescer = Coalescer(lambda: sent.append(time.monotonic()), interval=0.2)
    for _ in range(50):
        coalescer.kick()
    wait_until(lambda: len(sent) >= 1, timeout=5, interval=0.01, what="the first send")
    time.sleep(0.3)
    assert len(sent) <= 2  # the first kick's send, at most one more for kicks during it
    before = len(sent)
    coalescer.kick()
    wait_until(lambda: len(sent) == before + 1, timeout=5, interval=0.01, what="a new send")


def test_every_kick_is_followed_by_a_send_that_starts_after_it() -> None:
    # The guarantee the inbox relies on: an event stored before kick() is visible to the task
    # a later send starts. Record each kick's time; each must precede some send's start.
    starts: list[float] = []
    coalescer = Coalescer(lambda: starts.append(time.monotonic()), interval=0.001)
    kicks: list[float] = []

    def kicker() -> None:
        for _ in range(200):
            kicks.append(time.monotonic())
            coalescer.kick()
            time.sleep(0.0005)

    threads = [threading.Thread(target=kicker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    last_kick = max(kicks)
    wait_until(
        lambda: starts and starts[-1] >= last_kick,
        timeout=5,
        interval=0.01,
        what="a send after the last kick",
    )
    assert len(starts) < len(kicks)


def test_a_forked_child_starts_its_own_sender() -> None:
    read, write = os.pipe()
    coalescer = Coalescer(lambda: os.write(write, str(os.getpid()).encode() + b"\n"), 0.01)
    coalescer.kick()  # the parent's thread, which the child does not inherit
    pid = os.fork()
    if pid == 0:  # the child: kick and give its own sender time to send
        try:
            coalescer.kick()
            time.sleep(0.5)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    time.sleep(0.1)
    os.close(write)
    with os.fdopen(read) as lines:
        senders = {int(line) for line in lines.read().split()}
    assert pid in senders and os.getpid() in senders

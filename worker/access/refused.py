"""Keys recently refused, remembered per process so a refused key costs no database work.

Safe to remember for long: a key we issue is 256 random bits shown only at creation, so no
one presents it before it exists, and a key refused once (unknown or revoked) never becomes
valid again. What this saves is the transaction per attempt of a client retrying a wrong or
revoked key, or an attacker replaying a list of stolen ones. A fresh random guess still
costs one indexed lookup: it is hopeless, and the failure throttle answers 429 soon.
"""

from __future__ import annotations

import time
from collections import OrderedDict

REMEMBER_SECONDS = 600.0
MAX_REMEMBERED = 10_000  # bounded: the keys come from clients

_refused: OrderedDict[tuple[str, str], float] = OrderedDict()


def recently(key: tuple[str, str]) -> bool:
    """Whether ``key`` (database URL, key hash) was refused within ``REMEMBER_SECONDS``."""
    at = _refused.get(key)
    if at is None:
        return False
    if time.monotonic() - at >= REMEMBER_SECONDS:
        _refused.pop(key, None)
        return False
    return True


def remember(key: tuple[str, str]) -> None:
    _refused[key] = time.monotonic()
    _refused.move_to_end(key)
    while len(_refused) > MAX_REMEMBERED:
        _refused.popitem(last=False)  # the oldest first


def forget_all() -> None:
    _refused.clear()

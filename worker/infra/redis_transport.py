"""kombu's Redis transport with one crash on broker loss closed.

When the worker loses Redis, Celery 5.7 first ``collect()``s the broken broker connection,
which detaches the transport from its ``kombu.Connection`` (``transport.client = None``), and
then ``close()``s it. A channel that the first pass could not finish closing (a BRPOP was in
flight) is closed again by the second, and requeueing its unacknowledged messages — or a task
acknowledging late — asks the transport for the broker's address, finds ``None`` and raises
``AttributeError``. That is not a connection error, so the worker stops with "Unrecoverable
error" instead of reconnecting, and nothing consumes until something restarts it. Seen in
``tests/faults/test_chaos.py`` about once in eight Redis outages.

Each channel keeps the broker connection it was opened with and hands it back when the
transport has been detached: the late requeue or acknowledgement then reaches Redis (or fails
with an ordinary connection error, which Celery ignores and recovers from), and anything left
unacknowledged is redelivered after the visibility timeout as usual.

To see whether a kombu upgrade made this unnecessary, run
``tests/test_broker_config.py::test_a_detached_channel_still_requeues_what_it_holds`` with
``transport="redis"`` (the stock transport): while it raises ``AttributeError``, keep this.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis

# For Celery's ``broker_transport`` setting (a "module:Class" path).
TRANSPORT = "worker.infra.redis_transport:Transport"


class Channel(redis.Channel):
    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        self._broker = connection.client  # the kombu.Connection: host, port, credentials
        super().__init__(connection, *args, **kwargs)

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            self.connection.client = self._broker
        return super()._connparams(asynchronous=asynchronous)


class Transport(redis.Transport):
    Channel = Channel

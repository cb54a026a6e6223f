"""A real local HTTP receiver for outbound webhooks, verifying each delivery's signature."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    verified: bool
    status: int

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """Records every POST; ``secrets[path]`` verifies it; ``failures[(path, type)]`` = N makes
    the first N deliveries of that event type to that path answer 503."""

    url: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(
        self, path: str, event_type: str | None = None, status: int | None = 200
    ) -> list[Delivery]:
        with self.lock:
            return [
                d
                for d in self.deliveries
                if d.path == path
                and (event_type is None or d.payload.get("type") == event_type)
                and (status is None or d.status == status)
            ]

    def wait_for(
        self, path: str, event_type: str, count: int = 1, timeout: float = 20
    ) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.of(path, event_type)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise TimeoutError(
            f"{count} x {event_type} at {path}: got {len(self.of(path, event_type))}"
        )


def start_receiver() -> tuple[Receiver, ThreadingHTTPServer]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            secret = receiver.secrets.get(self.path)
            try:
                Webhook(secret).verify(body, headers) if secret else None
                verified = secret is not None
            except WebhookVerificationError:
                verified = False
            try:
                event_type = json.loads(body).get("type", "")
            except ValueError:
                event_type = ""
            with receiver.lock:
                left = receiver.failures.get((self.path, event_type), 0)
                if left:
                    receiver.failures[(self.path, event_type)] = left - 1
                status = 503 if left or not verified else 200
                receiver.deliveries.append(
                    Delivery(self.path, headers, body, time.time(), verified, status)
                )
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server

"""Notification URLs reach public addresses only, unless the operator allows a network;
checked when an endpoint is added and again, after resolving, at every delivery."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from tests.support.receiver import Receiver, start_receiver
from worker import ledger, notify
from worker.config import Settings
from worker.errors import ValidationFailed
from worker.infra.db import transaction
from worker.models import DeliveryAttempt, OutboxMessage
from worker.notify import commit_hooks, egress

LOOPBACK = "127.0.0.0/8,::1/128"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec, server = start_receiver()
    yield rec
    server.shutdown()


@pytest.fixture
def sealed(settings: Settings) -> Settings:
    """The test settings with a sealing key (needed on PostgreSQL to add endpoints)."""
    return settings.with_overrides(endpoint_secret_key=Fernet.generate_key().decode())


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
     "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"],
)  # fmt: skip
def test_non_public_addresses_are_refused_by_default(address: str) -> None:
    assert not egress.allowed(Settings(), ipaddress.ip_address(address))


def test_public_addresses_are_allowed() -> None:
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"):
        assert egress.allowed(Settings(), ipaddress.ip_address(address))


def test_an_allowed_network_is_reachable_and_nothing_else() -> None:
    settings = Settings(allow_private_webhook_urls="127.0.0.0/8")
    assert egress.allowed(settings, ipaddress.ip_address("127.0.0.1"))
    assert egress.allowed(settings, ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not egress.allowed(settings, ipaddress.ip_address("10.0.0.1"))


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/x", "http://169.254.169.254/latest/meta-data", "http://10.0.0.8/x",
     "http://[::1]:9/x", "http://localhost:9/x"],
)  # fmt: skip
def test_adding_an_endpoint_at_a_private_address_is_refused_naming_url(
    sealed: Settings, url: str
) -> None:
    with transaction(sealed) as session, pytest.raises(ValidationFailed) as raised:
        notify.add_endpoint(session, url)
    assert raised.value.field == "url" and "not a public address" in raised.value.message
    assert "ALLOW_PRIVATE_WEBHOOK_URLS" in raised.value.message


def test_the_operator_can_allow_loopback(sealed: Settings) -> None:
    allowed = sealed.with_overrides(allow_private_webhook_urls=LOOPBACK)
    with transaction(allowed) as session:
        assert notify.add_endpoint(session, "http://localhost:9/x").url == "http://localhost:9/x"


def test_delivery_rechecks_after_resolving(sealed: Settings, receiver: Receiver) -> None:
    """An endpoint added while loopback was allowed (or whose name has since come to resolve
    to it) gets nothing once it is not: the check runs again on the resolved address."""
    commit_hooks.install()
    allowed = sealed.with_overrides(
        allow_private_webhook_urls=LOOPBACK, low_balance_thresholds="USD=1000"
    )
    path = f"/rebound-{allowed.database_url[:6]}"  # one receiver for both backends
    url = receiver.url.replace("127.0.0.1", "localhost") + path
    with transaction(allowed) as session:
        notify.add_endpoint(session, url, "wallet.balance_low")
        customer, _ = ledger.create_customer(session, email="r@example.com", name="R")
        cid = customer.customer_id
        ledger.post_entry(session, customer_id=cid, currency="USD", amount=2000, is_credit=True)
    with transaction(allowed) as session:
        ledger.post_entry(session, customer_id=cid, currency="USD", amount=1600, is_credit=False)
    with transaction(allowed) as session:
        (message_id,) = session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.event_type == "wallet.balance_low")
        )
    refused = allowed.with_overrides(allow_private_webhook_urls="")
    outcome = notify.deliver(refused, message_id)
    assert outcome.status == "pending" and outcome.status_code is None
    assert (outcome.error or "").startswith("refused: 127.0.0.1 is not a public address")
    assert receiver.of(path, "wallet.balance_low", status=None) == []
    with transaction(allowed) as session:
        (attempt,) = session.scalars(select(DeliveryAttempt))
        assert attempt.error == outcome.error
    # Allowed again: delivered to the address that was checked, under the URL's own name.
    receiver.secrets[path] = _secret_of(allowed, url)
    assert notify.deliver(allowed, message_id, force=True).status == "delivered"
    (delivery,) = receiver.of(path, "wallet.balance_low")
    assert delivery.verified and delivery.headers["host"] == url.split("/")[2]


def _secret_of(settings: Settings, url: str) -> str:
    with transaction(settings) as session:
        (endpoint,) = [e for e in notify.list_endpoints(session) if e.url == url]
        return notify.endpoint_secret(settings, endpoint)


def test_a_delivery_target_keeps_the_name_for_host_and_tls() -> None:
    settings = Settings(allow_private_webhook_urls=LOOPBACK)
    target = egress.target(settings, "https://localhost:8443/hook?x=1")
    assert target.url.host in ("127.0.0.1", "::1") and target.url.port == 8443
    assert target.url.path == "/hook" and target.url.query == b"x=1"
    assert target.host_header == "localhost:8443" and target.sni_hostname == "localhost"
    plain = egress.target(settings, "http://127.0.0.1/x")
    assert plain.host_header == "127.0.0.1" and plain.sni_hostname is None

"""E-mail transport: smtps:// verifies the certificate; credentials never go in clear text."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from tests.support.processes import free_port
from worker import ledger, notify
from worker.config import Settings
from worker.infra.db import transaction
from worker.models import OutboxMessage
from worker.notify import commit_hooks


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.messages.append(envelope.content)
        return "250 OK"


def _server(mailbox: _Mailbox, port: int, tls: ssl.SSLContext | None = None) -> Controller:
    def login(_server, _session, _envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        from aiosmtpd.smtp import AuthResult

        mailbox.logins.append(mechanism)
        return AuthResult(success=True)

    kwargs = {"ssl_context": tls} if tls is not None else {}
    return Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=login,
        auth_require_tls=False,
        **kwargs,
    )


@pytest.fixture
def mailbox() -> Iterator[_Mailbox]:
    yield _Mailbox()


def _low_balance_email(settings: Settings) -> str:
    commit_hooks.install()
    with transaction(settings) as session:
        customer, _ = ledger.create_customer(session, email="m@example.com", name="M")
        cid = customer.customer_id
        ledger.post_entry(session, customer_id=cid, currency="USD", amount=2000, is_credit=True)
    with transaction(settings) as session:
        ledger.post_entry(session, customer_id=cid, currency="USD", amount=1600, is_credit=False)
    with transaction(settings) as session:
        (message_id,) = session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.channel == "email")
        )
    return message_id


def _mail_settings(settings: Settings, url: str) -> Settings:
    return settings.with_overrides(
        low_balance_thresholds="USD=1000", smtp_url=url, notify_email_to="ops@example.com"
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_smtps_refuses_a_certificate_it_cannot_verify(
    settings: Settings, certificate: tuple[Path, Path], mailbox: _Mailbox
) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*certificate)
    port = free_port()
    server = _server(mailbox, port, tls)
    server.start()
    try:
        s = _mail_settings(settings, f"smtps://mailer:pw@127.0.0.1:{port}")
        outcome = notify.deliver(s, _low_balance_email(s))
    finally:
        server.stop()
    assert outcome.status == "pending" and "CERTIFICATE_VERIFY_FAILED" in (outcome.error or "")
    assert mailbox.messages == [] and mailbox.logins == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_smtps_delivers_to_a_server_whose_certificate_verifies(
    settings: Settings,
    certificate: tuple[Path, Path],
    mailbox: _Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trust our own CA, as an operator
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*certificate)
    port = free_port()
    server = _server(mailbox, port, tls)
    server.start()
    try:
        s = _mail_settings(settings, f"smtps://mailer:pw@127.0.0.1:{port}")
        outcome = notify.deliver(s, _low_balance_email(s))
    finally:
        server.stop()
    assert outcome.status == "delivered", outcome.error
    assert len(mailbox.messages) == 1 and mailbox.logins != []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_smtp_with_credentials_never_logs_in_without_starttls(
    settings: Settings, mailbox: _Mailbox
) -> None:
    port = free_port()
    server = _server(mailbox, port)  # plain SMTP, no STARTTLS offered
    server.start()
    try:
        s = _mail_settings(settings, f"smtp://mailer:pw@127.0.0.1:{port}")
        outcome = notify.deliver(s, _low_balance_email(s))
    finally:
        server.stop()
    assert outcome.status == "pending" and "STARTTLS" in (outcome.error or "")
    assert mailbox.logins == [] and mailbox.messages == []

"""Where notifications may go: public addresses only, unless the operator allows a network.

A notification URL is the operator's (or an admin key's) input, and the worker POSTs to it
from inside the deployment: pointed at 127.0.0.1, 169.254.169.254 or 10.x it would reach
the metadata service, Redis or an admin port. So a URL is checked twice:

- when an endpoint is added (and NOTIFY_WEBHOOK_URL at start-up): a literal address, or a
  name that resolves, to a non-public address is refused, naming ``url``;
- at every delivery, after resolving the name: every address it resolves to must be
  allowed, and the request is then sent to the address that was checked (the URL's name
  kept for the Host header and the TLS certificate), so a name that resolves to a public
  address when checked and to a private one a moment later (DNS rebinding) gains nothing.

``ALLOW_PRIVATE_WEBHOOK_URLS`` lists the non-public networks allowed anyway (the tests allow
loopback, where their receiver listens).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import httpx

from worker.config import Settings, is_public

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(Exception):
    """The URL's host is, or resolves to, an address notifications may not reach."""


@dataclass(frozen=True)
class Target:
    """A checked destination: the URL to connect to, and what to tell the server."""

    url: httpx.URL  # the URL with its host replaced by the checked address
    host_header: str
    sni_hostname: str | None  # https: the name the certificate must carry


def allowed(settings: Settings, address: IPAddress) -> bool:
    if is_public(address):
        return True
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    candidates = [a for a in (address, mapped) if a is not None]
    return any(
        a in network
        for network in settings.private_webhook_networks
        for a in candidates
        if network.version == a.version
    )


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (a literal address is itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # Drop an IPv6 scope ("fe80::1%eth0"): the address is what is judged.
    return list(dict.fromkeys(ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos))


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _refusal(settings: Settings, addresses: list[IPAddress]) -> str | None:
    bad = [a for a in addresses if not allowed(settings, a)]
    if not bad:
        return None
    return (
        f"{bad[0]} is not a public address (loopback, link-local, private or reserved); "
        "set ALLOW_PRIVATE_WEBHOOK_URLS to allow its network"
    )


def check_new_url(settings: Settings, url: httpx.URL) -> str | None:
    """Why ``url`` may not be registered, or None. A name that does not resolve (yet) is
    let through: every delivery resolves and checks it again."""
    try:
        addresses = resolve(url.host, _port(url))
    except OSError:
        return None
    return _refusal(settings, addresses)


def target(settings: Settings, url: str) -> Target:
    """Resolve and check ``url`` for one delivery; ``EgressRefused`` if it may not be sent."""
    parsed = httpx.URL(url)
    try:
        addresses = resolve(parsed.host, _port(parsed))
    except OSError as exc:
        raise EgressRefused(f"cannot resolve {parsed.host}: {exc}") from None
    if not addresses:
        raise EgressRefused(f"{parsed.host} resolves to no address")
    refusal = _refusal(settings, addresses)
    if refusal is not None:
        raise EgressRefused(refusal)
    return Target(
        url=parsed.copy_with(host=str(addresses[0])),
        host_header=parsed.netloc.decode("ascii"),  # host[:port], IPv6 in brackets
        sni_hostname=parsed.host if parsed.scheme == "https" else None,
    )

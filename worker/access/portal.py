"""Customer portal links: a signed, expiring link that shows one customer their own wallet.

The link is ``/portal/{customer_id}/{token}``; the token signs the customer id and the expiry
together (``worker.access.signing``, a key of its own), so it opens that customer's page and
nothing else: another id in the path, an edited expiry or a token of another customer fails
the signature check, and past ``expires_at`` the link is refused too. A link cannot be revoked
one by one (nothing is stored); it lives at most PORTAL_SESSION_SECONDS, and replacing
SECRET_KEY ends every link at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from worker.access import signing
from worker.config import Settings
from worker.errors import PortalLinkInvalid
from worker.models import utcnow

PURPOSE = "portal-link"
# A token is the expiry (Unix seconds) and the signature: the expiry holds no "~", so the
# signed "{customer_id}~{expiry}" splits one way only and no other id can share a token.
TOKEN_SHAPE = re.compile(r"[0-9]{1,12}\.[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class PortalLink:
    customer_id: str
    token: str
    expires_at: datetime

    @property
    def path(self) -> str:
        return f"/portal/{quote(self.customer_id, safe='')}/{self.token}"


def create_link(settings: Settings, customer_id: str, *, now: datetime | None = None) -> PortalLink:
    """A link for ``customer_id``, valid PORTAL_SESSION_SECONDS from ``now``."""
    now = now or utcnow()
    expires_at = (now + timedelta(seconds=settings.portal_session_seconds)).replace(microsecond=0)
    return link_until(settings, customer_id, expires_at)


def link_until(settings: Settings, customer_id: str, expires_at: datetime) -> PortalLink:
    """A link for ``customer_id`` that expires at ``expires_at`` (whole seconds)."""
    expiry = int(expires_at.timestamp())
    token = signing.sign(signing.derive(settings, PURPOSE), f"{customer_id}~{expiry}")
    # The path carries the id already; only the expiry and the signature go in the token.
    return PortalLink(
        customer_id, token[len(customer_id) + 1 :], datetime.fromtimestamp(expiry, UTC)
    )


def verify(
    settings: Settings, customer_id: str, token: str, *, now: datetime | None = None
) -> PortalLink:
    """The link for ``customer_id`` if ``token`` is its valid, unexpired token; otherwise
    ``PortalLinkInvalid`` (the same answer for tampered and expired, but for the reason)."""
    message = (
        signing.unsign(signing.derive(settings, PURPOSE), f"{customer_id}~{token}")
        if TOKEN_SHAPE.fullmatch(token)
        else None
    )
    if message is None:
        raise PortalLinkInvalid("This link is not valid.")
    expiry = datetime.fromtimestamp(int(message.rpartition("~")[2]), UTC)
    if (now or utcnow()) >= expiry:
        raise PortalLinkInvalid("This link has expired; ask for a new one.")
    return PortalLink(customer_id, token, expiry)

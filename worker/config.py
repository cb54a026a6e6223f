"""Settings, read once from the environment.

Every variable is documented in the configuration table of docs/operations.md (the most
important ones also in the README); keep them in step (tests/test_docs.py checks the table).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

from worker.money import is_known_currency

DEFAULT_DATABASE_URL = "sqlite:///billing.db"
# A bootstrap key shorter than this stops start-up outside the embedded SQLite default.
MIN_BOOTSTRAP_KEY_LENGTH = 32
# SECRET_KEY signs sessions and portal links: a short one could be guessed offline.
MIN_SECRET_KEY_LENGTH = 32
# Fields whose values are credentials: never printed (repr, errors, logs).
SECRET_FIELDS = frozenset(
    {"api_key", "dodo_webhook_secret", "stripe_webhook_secret", "notify_webhook_secret"}
    | {"endpoint_secret_key", "metrics_token", "secret_key"}
)
# Fields holding URLs that may carry a password (user:password@host): printed without it.
URL_FIELDS = frozenset(
    {"database_url", "broker_url", "smtp_url", "notify_webhook_url", "ratelimit_storage_url"}
)
# Rates used for total_balance_usd when FX_RATES_TO_USD does not name a currency.
DEFAULT_FX_RATES_TO_USD = {"USD": Decimal(1), "INR": Decimal("0.012")}


class ConfigError(ValueError):
    """A setting is malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    # What sits between us and PostgreSQL: "" (nothing, or a pooler keeping a server connection
    # per client) or "pgbouncer" (transaction pooling: no server-side prepared statements).
    database_pooler: str = ""
    wallet_currencies: tuple[str, ...] = ("USD", "INR")
    business_id: str = "bus_local"
    fx_rates_to_usd: Mapping[str, Decimal] = field(
        default_factory=lambda: dict(DEFAULT_FX_RATES_TO_USD)
    )
    api_key: str | None = None
    broker_url: str | None = None
    # Redis broker: seconds before an unacknowledged message (its worker died) is redelivered.
    broker_visibility_timeout: int = 3600
    # Payment webhooks (issue: payment webhooks). A provider whose secret is unset is disabled.
    dodo_webhook_secret: str | None = None
    stripe_webhook_secret: str | None = None
    topup_products: str = ""
    inbox_sweep_seconds: int = 60
    # Expiring credit: how often beat expires lots past their expiry, and how many days
    # before it a lot's wallet.credits_expiring notice goes out.
    credit_expiry_seconds: int = 60
    credit_expiry_notice_days: int = 7
    # Holds: how long a hold lasts unless its request says (expires_in_seconds), and how often
    # beat releases holds past their expiry (a hold past it can never be captured anyway).
    hold_ttl_seconds: int = 900
    hold_expiry_seconds: int = 30
    # Usage pricing file (TOML); unset means no event is priced.
    pricing_file: str | None = None
    # Low-balance notifications.
    low_balance_thresholds: str = ""
    low_balance_scan_seconds: int = 300
    notify_webhook_url: str | None = None
    notify_webhook_secret: str | None = None
    notify_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    smtp_url: str | None = None
    notify_email_to: str | None = None
    notify_email_from: str = "billing-worker@localhost"
    # How often beat sweeps the outbox for due (re)deliveries.
    notify_dispatch_seconds: int = 5
    # Celery prefork children serve Prometheus metrics on WORKER_METRICS_PORT + child index.
    worker_metrics_port: int | None = None
    # Refund-to-wallet cap per refund, minor units; None means no cap.
    wallet_refund_max: int | None = None
    # GET /metrics requires `Authorization: Bearer METRICS_TOKEN` when set; open when unset.
    metrics_token: str | None = field(default=None, repr=False)
    # Refunds to wallet of a payment the system has never seen are refused unless this is on,
    # and then each is capped at max_unknown_payment_refund (required with it).
    allow_unknown_payment_refunds: bool = False
    max_unknown_payment_refund: int | None = None
    # Failed authentications allowed per client address and minute; past it, 429.
    auth_failure_limit: int = 20
    # Where the failure counts live (limits' storage URI); None: the Redis broker's, or
    # process memory on the embedded default.
    ratelimit_storage_url: str | None = None
    # Fernet key(s) sealing endpoint signing secrets at rest; the first seals, all open.
    endpoint_secret_key: str | None = None
    # Non-public networks notification URLs may reach anyway (CIDRs, or "1" for all).
    allow_private_webhook_urls: str = ""
    # Signs the dashboard's session cookies and the portal's links; None: generated once and
    # kept in the database (worker.access.signing), so every web process agrees.
    secret_key: str | None = field(default=None, repr=False)
    # How long a dashboard sign-in and a customer portal link last.
    dashboard_session_seconds: int = 8 * 3600
    portal_session_seconds: int = 3600

    def __repr__(self) -> str:
        # A dataclass repr would print every credential (a traceback, a debug log, a REPL).
        parts = []
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in SECRET_FIELDS and value:
                value = "<redacted>"
            elif name in URL_FIELDS and isinstance(value, str):
                value = redact_url(value)
            parts.append(f"{name}={value!r}")
        return f"Settings({', '.join(parts)})"

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)

    # -- parsed accessors (raise ConfigError naming the variable; from_env calls each once) --

    @property
    def low_balance_threshold_map(self) -> dict[str, int]:
        """LOW_BALANCE_THRESHOLDS as ``{"USD": 1000}`` (minor units)."""
        return parse_thresholds(self.low_balance_thresholds, "LOW_BALANCE_THRESHOLDS")

    @property
    def notify_retry_delays(self) -> tuple[float, ...]:
        """NOTIFY_RETRY_SCHEDULE: seconds to wait after failed attempt 1, 2, ..."""
        return _retry_schedule(self.notify_retry_schedule)

    @property
    def notify_webhook(self) -> tuple[str, str] | None:
        """(url, secret) of NOTIFY_WEBHOOK_URL, or None when unset."""
        if not self.notify_webhook_url:
            return None
        if not self.notify_webhook_secret:
            raise ConfigError("NOTIFY_WEBHOOK_SECRET: required when NOTIFY_WEBHOOK_URL is set")
        _http_url(self.notify_webhook_url, "NOTIFY_WEBHOOK_URL")
        _whsec(self.notify_webhook_secret, "NOTIFY_WEBHOOK_SECRET")
        return self.notify_webhook_url, self.notify_webhook_secret

    @property
    def smtp(self) -> SmtpTarget | None:
        """SMTP_URL + NOTIFY_EMAIL_TO, or None when either is unset."""
        if not self.smtp_url or not self.notify_email_to:
            return None
        return _smtp(self.smtp_url, self.notify_email_to, self.notify_email_from)

    @property
    def private_webhook_networks(self) -> tuple[IPNetwork, ...]:
        """ALLOW_PRIVATE_WEBHOOK_URLS: the non-public networks notifications may reach."""
        return parse_networks(self.allow_private_webhook_urls, "ALLOW_PRIVATE_WEBHOOK_URLS")

    def validate(self) -> Settings:
        """Parse every derived setting once so a malformed value fails at start-up."""
        _ = (self.low_balance_threshold_map, self.notify_retry_delays, self.notify_webhook)
        _ = (self.smtp, self.private_webhook_networks)
        _check_bootstrap_key(self)
        if self.secret_key is not None and len(self.secret_key) < MIN_SECRET_KEY_LENGTH:
            raise ConfigError(
                f"SECRET_KEY: at least {MIN_SECRET_KEY_LENGTH} characters (it has "
                f"{len(self.secret_key)}); generate one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))', or leave it unset"
            )
        if self.endpoint_secret_key:
            parse_fernet_keys(self.endpoint_secret_key)
        if self.notify_webhook_url:
            # Literal addresses only: names are resolved, and checked, at each delivery.
            _public_literal(self.notify_webhook_url, self, "NOTIFY_WEBHOOK_URL")
        if self.allow_unknown_payment_refunds and self.max_unknown_payment_refund is None:
            raise ConfigError(
                "MAX_UNKNOWN_PAYMENT_REFUND: required when ALLOW_UNKNOWN_PAYMENT_REFUNDS is true"
                " (the largest refund, in minor units, of a payment this service has not seen)"
            )
        return self

    @property
    def topup_map(self) -> dict[str, TopupProduct]:
        """TOPUP_PRODUCTS parsed: product id -> (credit in minor units, currency, validity)."""
        return parse_topup_products(self.topup_products)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            database_url=_database_url(env.get("DATABASE_URL")),
            database_pooler=_database_pooler(env.get("DATABASE_POOLER")),
            wallet_currencies=_currencies(env.get("WALLET_CURRENCIES", "USD,INR")),
            business_id=env.get("BUSINESS_ID") or "bus_local",
            fx_rates_to_usd=_fx_rates(env.get("FX_RATES_TO_USD", "")),
            api_key=env.get("BILLING_API_KEY") or None,
            broker_url=env.get("CELERY_BROKER_URL") or None,
            broker_visibility_timeout=_positive_int(env, "BROKER_VISIBILITY_TIMEOUT", 3600),
            dodo_webhook_secret=env.get("DODO_WEBHOOK_SECRET") or None,
            stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or None,
            topup_products=_checked_topup_products(env.get("TOPUP_PRODUCTS", "")),
            inbox_sweep_seconds=_positive_int(env, "INBOX_SWEEP_SECONDS", 60),
            credit_expiry_seconds=_positive_int(env, "CREDIT_EXPIRY_SECONDS", 60),
            credit_expiry_notice_days=_positive_int(env, "CREDIT_EXPIRY_NOTICE_DAYS", 7),
            hold_ttl_seconds=_positive_int(env, "HOLD_TTL_SECONDS", 900),
            hold_expiry_seconds=_positive_int(env, "HOLD_EXPIRY_SECONDS", 30),
            pricing_file=env.get("PRICING_FILE") or None,
            low_balance_thresholds=env.get("LOW_BALANCE_THRESHOLDS", ""),
            low_balance_scan_seconds=_positive_int(env, "LOW_BALANCE_SCAN_SECONDS", 300),
            notify_webhook_url=env.get("NOTIFY_WEBHOOK_URL") or None,
            notify_webhook_secret=env.get("NOTIFY_WEBHOOK_SECRET") or None,
            notify_retry_schedule=env.get(
                "NOTIFY_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000,36000"
            ),
            smtp_url=env.get("SMTP_URL") or None,
            notify_email_to=env.get("NOTIFY_EMAIL_TO") or None,
            notify_email_from=env.get("NOTIFY_EMAIL_FROM") or "billing-worker@localhost",
            notify_dispatch_seconds=_positive_int(env, "NOTIFY_DISPATCH_SECONDS", 5),
            worker_metrics_port=(
                _positive_int(env, "WORKER_METRICS_PORT", 0)
                if env.get("WORKER_METRICS_PORT")
                else None
            ),
            wallet_refund_max=(
                _positive_int(env, "WALLET_REFUND_MAX", 0) if env.get("WALLET_REFUND_MAX") else None
            ),
            metrics_token=env.get("METRICS_TOKEN") or None,
            allow_unknown_payment_refunds=_boolean(env, "ALLOW_UNKNOWN_PAYMENT_REFUNDS"),
            max_unknown_payment_refund=(
                _positive_int(env, "MAX_UNKNOWN_PAYMENT_REFUND", 0)
                if env.get("MAX_UNKNOWN_PAYMENT_REFUND")
                else None
            ),
            auth_failure_limit=_positive_int(env, "AUTH_FAILURE_LIMIT", 20),
            ratelimit_storage_url=env.get("RATELIMIT_STORAGE_URL") or None,
            endpoint_secret_key=env.get("ENDPOINT_SECRET_KEY") or None,
            allow_private_webhook_urls=env.get("ALLOW_PRIVATE_WEBHOOK_URLS", ""),
            secret_key=env.get("SECRET_KEY") or None,
            dashboard_session_seconds=_positive_int(env, "DASHBOARD_SESSION_SECONDS", 8 * 3600),
            portal_session_seconds=_positive_int(env, "PORTAL_SESSION_SECONDS", 3600),
        ).validate()


def _database_url(value: str | None) -> str:
    if not value:
        return DEFAULT_DATABASE_URL
    # Heroku-style URLs name no driver; we always speak psycopg 3.
    for prefix in ("postgres://", "postgresql://"):
        if value.startswith(prefix):
            return "postgresql+psycopg://" + value[len(prefix) :]
    return value


DATABASE_POOLERS = ("", "pgbouncer")


def _database_pooler(value: str | None) -> str:
    pooler = (value or "").strip().lower()
    if pooler == "none":
        pooler = ""
    if pooler not in DATABASE_POOLERS:
        raise ConfigError(f"DATABASE_POOLER: expected 'pgbouncer' or 'none', got {value!r}")
    return pooler


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.strip().isdigit() or int(raw) <= 0:
        raise ConfigError(f"{name}: expected a positive integer, got {raw!r}")
    return int(raw)


def _boolean(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}: expected true or false, got {env.get(name)!r}")


def _currencies(value: str) -> tuple[str, ...]:
    codes = tuple(dict.fromkeys(c.strip().upper() for c in value.split(",") if c.strip()))
    if not codes:
        raise ConfigError("WALLET_CURRENCIES: at least one currency is required")
    unknown = [c for c in codes if not is_known_currency(c)]
    if unknown:
        raise ConfigError(f"WALLET_CURRENCIES: unknown ISO 4217 code(s) {', '.join(unknown)}")
    return codes


def _fx_rates(value: str) -> dict[str, Decimal]:
    rates = dict(DEFAULT_FX_RATES_TO_USD)
    for pair in filter(None, (p.strip() for p in value.split(","))):
        code, sep, rate = pair.partition("=")
        try:
            parsed = Decimal(rate.strip())
        except InvalidOperation:
            parsed = Decimal(-1)
        if (
            not sep
            or not is_known_currency(code.strip().upper())
            or not parsed.is_finite()
            or parsed < 0
        ):
            raise ConfigError(f"FX_RATES_TO_USD: cannot parse {pair!r} (expected CODE=RATE)")
        rates[code.strip().upper()] = parsed
    return rates


class TopupProduct(NamedTuple):
    """A top-up product: what one unit bought credits, and for how long (None: for ever)."""

    amount: int
    currency: str
    validity: timedelta | None = None


_DURATION = re.compile(r"([1-9][0-9]{0,6})([dhm])")
_DURATION_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
# Far enough for any credit, and far from datetime's year 9999.
MAX_DURATION = timedelta(days=100 * 366)


def parse_duration(raw: str) -> timedelta:
    """``30d``, ``12h`` or ``90m`` as a timedelta (a positive whole number of days, hours or
    minutes, at most 100 years); ``ValueError`` saying what is expected otherwise."""
    match = _DURATION.fullmatch(raw.strip())
    if match:
        duration = timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})
        if duration <= MAX_DURATION:
            return duration
    raise ValueError(
        f"expected a duration such as 30d, 12h or 90m (at most {MAX_DURATION.days}d), got {raw!r}"
    )


def parse_topup_products(value: str) -> dict[str, TopupProduct]:
    """``prod_a=10000:USD:365d,prod_b=500000:INR`` -> {product id: TopupProduct}; the
    validity (``:365d``, ``:12h``, ``:90m``) is optional and counts from the payment."""
    products: dict[str, TopupProduct] = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        product, sep, spec = pair.partition("=")
        amount, colon, rest = spec.strip().partition(":")
        currency, has_validity, validity_raw = rest.partition(":")
        product, amount, currency = product.strip(), amount.strip(), currency.strip().upper()
        try:
            validity = parse_duration(validity_raw) if has_validity else None
        except ValueError:
            validity = timedelta(0)
        if (
            not sep
            or not colon
            or not product
            or not amount.isdigit()
            or int(amount) <= 0
            or not is_known_currency(currency)
            or validity == timedelta(0)
        ):
            raise ConfigError(
                f"TOPUP_PRODUCTS: cannot parse {pair!r} (expected "
                "PRODUCT_ID=MINOR_UNITS:CURRENCY or PRODUCT_ID=MINOR_UNITS:CURRENCY:VALIDITY, "
                "a validity such as 365d, 12h or 90m)"
            )
        if product in products:
            raise ConfigError(f"TOPUP_PRODUCTS: product {product!r} is listed twice")
        products[product] = TopupProduct(int(amount), currency, validity)
    return products


def _checked_topup_products(value: str) -> str:
    parse_topup_products(value)  # fail at startup, not on the first payment
    return value


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    ssl: bool  # smtps:// (implicit TLS); smtp://...?starttls=1 upgrades a plain connection
    # smtp:// with a user name always upgrades: credentials never travel in clear text.
    starttls: bool
    username: str | None
    password: str | None = field(repr=False)
    recipients: tuple[str, ...]
    sender: str


def parse_thresholds(value: str, name: str) -> dict[str, int]:
    """``USD=1000,INR=80000`` -> ``{"USD": 1000, "INR": 80000}``; whole minor units >= 0."""
    result: dict[str, int] = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        code, sep, raw = pair.partition("=")
        code, raw = code.strip().upper(), raw.strip()
        if not sep or not is_known_currency(code) or not raw.isdigit():
            raise ConfigError(f"{name}: cannot parse {pair!r} (expected CODE=MINOR_UNITS)")
        result[code] = int(raw)
    return result


def _retry_schedule(value: str) -> tuple[float, ...]:
    delays: list[float] = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            delay = float(part)
        except ValueError:
            delay = -1.0
        if not (0 <= delay <= 7 * 86400):
            raise ConfigError(
                f"NOTIFY_RETRY_SCHEDULE: {part!r} is not a number of seconds (0..604800)"
            )
        delays.append(delay)
    return tuple(delays)


def _http_url(value: str, name: str) -> str:
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{name}: expected an http(s) URL, got {redact_url(value)!r}")
    return value


def redact_url(url: str) -> str:
    """``url`` without its password (``scheme://user:***@host``), for messages and reprs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if not password:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))


def _check_bootstrap_key(settings: Settings) -> None:
    key = settings.api_key
    if key is None or len(key) >= MIN_BOOTSTRAP_KEY_LENGTH:
        return
    if settings.is_sqlite:
        # The embedded default (SQLite, one machine) is for trying it out: the Quick start's
        # `dev-key` keeps working; the web process logs a warning (webhooks.throttle).
        return
    raise ConfigError(
        f"BILLING_API_KEY: must be at least {MIN_BOOTSTRAP_KEY_LENGTH} characters outside the "
        f"embedded SQLite default (it has {len(key)}); generate one with "
        "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )


def weak_bootstrap_key(settings: Settings) -> bool:
    """A short BILLING_API_KEY, tolerated only on the embedded default."""
    return settings.api_key is not None and len(settings.api_key) < MIN_BOOTSTRAP_KEY_LENGTH


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_EVERY_NETWORK = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def parse_networks(value: str, name: str) -> tuple[IPNetwork, ...]:
    """``10.0.0.0/8,::1`` -> networks; ``1``/``true``/``yes``/``all`` -> every address."""
    raw = [p.strip() for p in value.split(",") if p.strip()]
    if [r.lower() for r in raw] in (["1"], ["true"], ["yes"], ["all"]):
        return _EVERY_NETWORK
    networks: list[IPNetwork] = []
    for part in raw:
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(
                f"{name}: cannot parse {part!r} (expected CIDR networks such as "
                "127.0.0.0/8,::1/128, or 1 for every address)"
            ) from None
    return tuple(networks)


def _public_literal(url: str, settings: Settings, name: str) -> None:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if not is_public(address) and not any(
        address in n for n in settings.private_webhook_networks if n.version == address.version
    ):
        raise ConfigError(
            f"{name}: {address} is not a public address; set ALLOW_PRIVATE_WEBHOOK_URLS to allow it"
        )


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is on the public internet: not loopback, link-local, private,
    shared (CGNAT), multicast, reserved or unspecified (an IPv4-mapped IPv6 address counts
    as its IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def parse_fernet_keys(value: str) -> tuple[str, ...]:
    """ENDPOINT_SECRET_KEY: comma-separated Fernet keys (url-safe base64 of 32 bytes)."""
    keys = tuple(k.strip() for k in value.split(",") if k.strip())
    for key in keys:
        try:
            ok = len(base64.urlsafe_b64decode(key.encode())) == 32
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            raise ConfigError(
                "ENDPOINT_SECRET_KEY: expected Fernet keys (url-safe base64 of 32 bytes), e.g. "
                "from python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            )
    return keys


def _whsec(value: str, name: str) -> str:
    body = value.removeprefix("whsec_")
    try:
        ok = value.startswith("whsec_") and bool(base64.b64decode(body + "==", validate=False))
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{name}: expected a whsec_<base64> secret")
    return value


def _smtp(url: str, to: str, sender: str) -> SmtpTarget:
    parsed = urlsplit(url)
    recipients = tuple(a.strip() for a in to.split(",") if a.strip())
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname or port == -1:
        raise ConfigError(
            f"SMTP_URL: expected smtp://[user:pass@]host[:port], got {redact_url(url)!r}"
        )
    if not recipients or any("@" not in r for r in recipients):
        raise ConfigError(f"NOTIFY_EMAIL_TO: expected comma-separated addresses, got {to!r}")
    query = dict(p.partition("=")[::2] for p in parsed.query.split("&") if p)
    starttls = query.get("starttls")
    if parsed.scheme == "smtp" and parsed.username and starttls in ("0", "false", "no"):
        raise ConfigError(
            "SMTP_URL: refusing to send credentials over smtp:// without STARTTLS "
            "(drop starttls=0, or use smtps://)"
        )
    return SmtpTarget(
        host=parsed.hostname,
        port=port or (465 if parsed.scheme == "smtps" else 25),
        ssl=parsed.scheme == "smtps",
        starttls=parsed.scheme == "smtp"
        and (starttls in ("1", "true", "yes") or bool(parsed.username)),
        username=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password else None,
        recipients=recipients,
        sender=sender,
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built from the environment on first use."""
    return Settings.from_env()

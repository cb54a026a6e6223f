"""schemathesis against ``/openapi.json``: no 5xx, and every response conforms to the spec.

The app runs on PostgreSQL (the backend that refuses the most: NUL bytes, integer ranges),
called in-process through WSGI. Examples are bounded so the whole module stays well under a
minute. Positive cases aim at a real customer so the success paths are exercised too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode, checks

from tests.support.processes import create_pg_database, drop_pg_database
from webhooks import create_app
from worker import ledger
from worker.config import Settings
from worker.infra import migrate
from worker.infra.db import get_engine, transaction

pytestmark = pytest.mark.slow

API_KEY = "schemathesis-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def api_database() -> Iterator[tuple[Settings, str]]:
    """A migrated PostgreSQL database holding one funded customer; yields (settings, id)."""
    name, url = create_pg_database("bw_schemathesis")
    settings = Settings(database_url=url, api_key=API_KEY)
    migrate.upgrade(settings)
    with transaction(settings) as s:
        customer, _ = ledger.create_customer(s, email="fuzz@example.com", name="Fuzz")
        ledger.post_entry(
            s, customer_id=customer.customer_id, currency="USD", amount=10**9, is_credit=True
        )
    try:
        yield settings, customer.customer_id
    finally:
        get_engine(settings).dispose()
        drop_pg_database(name)


@pytest.fixture(scope="module")
def api_schema(api_database):
    """The app's own OpenAPI document, loaded through WSGI."""
    settings, _ = api_database
    return schemathesis.openapi.from_wsgi("/openapi.json", create_app(settings))


@pytest.fixture(scope="module")
def known_customer(api_database) -> str:
    return api_database[1]


schema = schemathesis.pytest.from_fixture("api_schema")

# No 5xx; status, content type, headers and body exactly as documented; and input the document
# rules out is refused. Not `positive_data_acceptance`: a well-formed currency code that is not
# configured (WALLET_CURRENCIES is a runtime setting, not part of the schema) is a 422.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_document(case, known_customer: str) -> None:
    if "customer_id" in (case.path_parameters or {}) and _is_positive(case):
        case.path_parameters["customer_id"] = known_customer
    response = case.call_and_validate(headers=AUTH, checks=CHECKS)
    REACHED.add((case.method, case.path, response.status_code))


REACHED: set[tuple[str, str, int]] = set()


def test_fuzzing_reached_every_success_path() -> None:
    """Runs after the fuzzing above (file order): each operation answered 200 at least once."""
    ok = {(method, path) for method, path, status in REACHED if status == 200}
    customer, entries = (
        "/customers/{customer_id}",
        "/customers/{customer_id}/wallets/ledger-entries",
    )
    expected = {
        ("GET", "/healthz"),
        ("POST", "/customers"),
        ("GET", "/customers"),
        ("GET", customer),
        ("PATCH", customer),
        ("GET", customer + "/wallets"),
        ("POST", entries),
        ("GET", entries),
    }
    assert expected <= ok, f"never 200: {sorted(expected - ok)}"


def _is_positive(case) -> bool:
    return case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE

"""API keys' scopes and limits, principals, and the append-only audit log (SQLite and
PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from worker.access import apikeys, audit
from worker.access.scopes import ADMIN, NON_ADMIN, parse_scopes
from worker.errors import CreditLimitExceeded, ScopeRequired, ValidationFailed
from worker.models import ApiKeyScope, AuditLog


def test_a_new_key_is_read_only_by_default(settings, tx) -> None:
    with tx() as s:
        key, secret = apikeys.create_key(s, name="reporting")
    principal = apikeys.authenticate(settings, secret)
    assert principal is not None
    assert (principal.key_id, principal.scopes, principal.max_credit) == (
        key.id,
        frozenset({"read"}),
        None,
    )
    assert principal.actor == key.id
    with pytest.raises(ScopeRequired) as refused:
        principal.require("debit")
    assert refused.value.details == {"required_scope": "debit"}


def test_admin_absorbs_and_implies_every_scope(settings, tx) -> None:
    assert parse_scopes(["read", "ADMIN", "debit"]) == frozenset({ADMIN})
    with tx() as s:
        _, secret = apikeys.create_key(s, scopes=["admin", "read"])
        key_id = s.scalar(select(ApiKeyScope.key_id))
        assert list(s.scalars(select(ApiKeyScope.scope))) == ["admin"]
    principal = apikeys.authenticate(settings, secret)
    assert principal.is_admin and principal.key_id == key_id
    assert all(principal.allows(s) for s in (*NON_ADMIN, ADMIN))


def test_the_bootstrap_key_is_admin_and_acts_as_bootstrap(settings) -> None:
    principal = apikeys.authenticate(settings, "test-key")
    assert (principal.actor, principal.scopes) == ("bootstrap", frozenset({ADMIN}))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"scopes": ["read", "write"]}, "scope"),
        ({"scopes": []}, "scope"),
        ({"max_credit": 0}, "max_credit"),
        ({"max_credit": -5}, "max_credit"),
        ({"max_credit": True}, "max_credit"),
    ],
)
def test_bad_scopes_or_limits_are_refused_naming_the_field(tx, kwargs, field) -> None:
    with tx() as s, pytest.raises(ValidationFailed) as refused:
        apikeys.create_key(s, **kwargs)
    assert refused.value.field == field


def test_max_credit_bounds_each_credit_and_needs_the_credit_scope(settings, tx) -> None:
    with tx() as s:
        _, secret = apikeys.create_key(s, scopes=["credit"], max_credit=100)
    principal = apikeys.authenticate(settings, secret)
    principal.check_credit(100, "USD")
    with pytest.raises(CreditLimitExceeded) as refused:
        principal.check_credit(101, "INR")
    assert refused.value.details["max_credit"] == 100
    assert refused.value.details["limit"] == "max_credit"
    with tx() as s:
        _, reader = apikeys.create_key(s)
    with pytest.raises(ScopeRequired):
        apikeys.authenticate(settings, reader).check_credit(1, "USD")


def test_the_database_refuses_an_unknown_scope(tx) -> None:
    with tx() as s:
        key, _ = apikeys.create_key(s)
    with pytest.raises(IntegrityError), tx() as s:
        s.add(ApiKeyScope(key_id=key.id, scope="superuser"))
        s.flush()


def test_key_creation_and_revocation_are_audited_with_their_actor(settings, tx) -> None:
    with tx() as s:
        key, secret = apikeys.create_key(s, name="ci", scopes=["debit"], actor="cli")
    with tx() as s:
        apikeys.revoke_key(s, key.id, actor="bootstrap")
        apikeys.revoke_key(s, key.id, actor="someone-else")  # already revoked: no change
    assert apikeys.authenticate(settings, secret) is None
    with tx() as s:
        stored = s.get(type(key), key.id)
        assert (stored.created_by, stored.revoked_by) == ("cli", "bootstrap")
        entries = audit.list_entries(s)
        assert [(e.action, e.actor, e.target) for e in entries] == [
            ("apikey.revoked", "bootstrap", key.id),
            ("apikey.created", "cli", key.id),
        ]
        assert entries[1].details == {"name": "ci", "scopes": ["debit"], "max_credit": None}


def test_an_action_rolled_back_leaves_no_audit_entry(tx) -> None:
    with pytest.raises(RuntimeError), tx() as s:
        apikeys.create_key(s, actor="cli")
        raise RuntimeError("the command failed after creating the key")
    with tx() as s:
        assert audit.list_entries(s) == []
        assert apikeys.list_keys(s) == []


def test_the_audit_log_is_append_only(tx) -> None:
    with tx() as s:
        audit.record(s, "cli", "task.run", "check-low-balances")
    for statement in ("UPDATE audit_log SET actor = 'nobody'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), tx() as s:
            s.execute(text(statement))
    with tx() as s:
        assert [e.actor for e in s.scalars(select(AuditLog))] == ["cli"]

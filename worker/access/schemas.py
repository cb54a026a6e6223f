"""The JSON shapes of API keys and audit entries, shared by the HTTP API and the CLI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from worker.ledger.schemas import iso
from worker.models import ApiKey, AuditLog


class ApiKeyOut(BaseModel):
    id: str
    name: str | None
    scopes: list[str] = Field(description="read, customers, debit, credit, admin.")
    max_credit: int | None = Field(description="The largest single credit; null: no limit.")
    created_at: str
    created_by: str
    revoked_at: str | None
    revoked_by: str | None

    @classmethod
    def of(cls, key: ApiKey, scopes: list[str]) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            scopes=scopes,
            max_credit=key.max_credit,
            created_at=iso(key.created_at),
            created_by=key.created_by,
            revoked_at=iso(key.revoked_at) if key.revoked_at else None,
            revoked_by=key.revoked_by,
        )


class AuditEntryOut(BaseModel):
    id: int
    at: str
    actor: str = Field(description="An API key's id, `bootstrap`, `cli` or `system`.")
    action: str = Field(description="e.g. `apikey.created`, `task.triggered`.")
    target: str | None = Field(description="What was acted on: a key, task, endpoint, event id.")
    details: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditLog) -> AuditEntryOut:
        return cls(
            id=entry.id,
            at=iso(entry.at),
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            details=entry.details or {},
        )


class AuditListOut(BaseModel):
    items: list[AuditEntryOut]

"""Request shapes of the HTTP API (responses live in ``worker.schemas``, shared with the CLI)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from worker.money import MAX_AMOUNT

Amount = Annotated[
    StrictInt,
    Field(
        gt=0, le=MAX_AMOUNT, description="Minor units (cents, paise); an integer, never a float."
    ),
]
Currency = Annotated[StrictStr, Field(min_length=3, max_length=3, examples=["USD", "INR"])]
Metadata = dict[str, StrictStr | StrictInt | float | bool | None]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CustomerPath(BaseModel):
    customer_id: str = Field(max_length=64)


class PageQuery(BaseModel):
    page_number: int = Field(0, ge=0, description="0-based page index.")
    page_size: int = Field(10, ge=1, le=100)


class CustomerListQuery(PageQuery):
    email: str | None = None


class CustomerCreate(_Body):
    email: StrictStr = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    name: StrictStr = Field(min_length=1, max_length=500)
    phone_number: StrictStr | None = Field(None, max_length=64)
    metadata: Metadata | None = None


class CustomerPatch(_Body):
    name: StrictStr | None = Field(None, min_length=1, max_length=500)
    phone_number: StrictStr | None = Field(None, max_length=64)
    metadata: Metadata | None = None
    low_balance_thresholds: dict[str, Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT)]] | None = (
        Field(None, description="Per-currency low-balance threshold overrides, minor units.")
    )


class LedgerEntryCreate(_Body):
    amount: Amount
    currency: Currency
    entry_type: Literal["credit", "debit"]
    idempotency_key: StrictStr | None = Field(None, min_length=1, max_length=255)
    reason: StrictStr | None = Field(None, max_length=1000)


class LedgerEntryListQuery(PageQuery):
    currency: str | None = Field(None, min_length=3, max_length=3)

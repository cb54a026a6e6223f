"""Reading lots on SQLite and PostgreSQL: an entry with the lots behind it, lots by status and
page, each wallet's expiry summary, and the breakage report."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from tests.support.lots import DAY, credit, debit, expire, expiring_lot, wait_until_past
from worker import ledger
from worker.config import Settings
from worker.errors import CustomerNotFound, EntryNotFound, UnsupportedCurrency, ValidationFailed
from worker.infra.db import transaction
from worker.ledger import breakage, lot_views
from worker.models import LedgerEntry, new_id, utcnow


@pytest.fixture
def customer_id(tx) -> str:
    with tx() as s:
        return ledger.create_customer(s, email="read@example.com", name="Read")[0].customer_id


@pytest.fixture
def other_id(tx) -> str:
    with tx() as s:
        return ledger.create_customer(s, email="other@example.com", name="Other")[0].customer_id


def check(tx) -> None:
    with tx() as s:
        report = ledger.verify(s)
    assert report.ok, report.problems


# -- one entry and its lots ------------------------------------------------------------------


def test_debit_spanning_lots_lists_what_it_took_in_spending_order(tx, customer_id) -> None:
    _, never = credit(tx, customer_id, 100)
    _, later = credit(tx, customer_id, 100, expires_at=utcnow() + 2 * DAY)
    _, promo = credit(tx, customer_id, 100, expires_at=utcnow() + DAY, category="promotional")
    spent = debit(tx, customer_id, 250)
    with tx() as s:
        detail = lot_views.entry_detail(s, customer_id, spent.entry.id)
    assert detail.entry.id == spent.entry.id and detail.lot is None
    assert detail.consumed == [(promo, 100), (later, 100), (never, 50)]
    assert sum(amount for _, amount in detail.consumed) == spent.entry.amount == 250


def test_credit_detail_is_its_lot(tx, customer_id) -> None:
    expires = utcnow() + DAY
    posted, lot_id = credit(tx, customer_id, 700, expires_at=expires, category="promotional")
    debit(tx, customer_id, 200)
    with tx() as s:
        detail = lot_views.entry_detail(s, customer_id, posted.entry.id)
        status = lot_views.lot_status(detail.lot, utcnow())
    assert detail.consumed is None
    lot = detail.lot
    assert (lot.id, lot.amount, lot.remaining, lot.expired) == (lot_id, 700, 500, 0)
    assert (lot.category, lot.entry_id, status) == ("promotional", posted.entry.id, "active")
    assert abs((lot.expires_at - expires).total_seconds()) < 0.001


def test_expiration_detail_names_its_one_lot(tx, customer_id) -> None:
    lot_id, moment = expiring_lot(tx, customer_id, 90)
    wait_until_past(moment)
    expiration = expire(tx, customer_id, lot_id)
    with tx() as s:
        detail = lot_views.entry_detail(s, customer_id, expiration.entry.id)
    assert detail.entry.event_type == "expiration"
    assert detail.consumed == [(lot_id, 90)]


def test_another_customers_entry_is_not_found(tx, customer_id, other_id) -> None:
    theirs, _ = credit(tx, other_id, 100)
    with tx() as s, pytest.raises(EntryNotFound) as raised:
        lot_views.entry_detail(s, customer_id, theirs.entry.id)
    assert raised.value.details == {"entry_id": theirs.entry.id}
    with tx() as s, pytest.raises(EntryNotFound):
        lot_views.entry_detail(s, customer_id, "wle_unknown")
    with tx() as s, pytest.raises(CustomerNotFound):
        lot_views.entry_detail(s, "cus_unknown", theirs.entry.id)


def test_entries_posted_before_lots_have_no_lots(tx, customer_id) -> None:
    # Rows as the ledger held them before migration 0010: no lot, no consumption.
    rows = [
        dict(is_credit=True, before_balance=0, after_balance=100),
        dict(is_credit=False, before_balance=100, after_balance=60),
    ]
    ids = []
    with tx() as s:
        for row in rows:
            ids.append(new_id("wle"))
            s.execute(
                insert(LedgerEntry).values(
                    id=ids[-1],
                    business_id="bus_local",
                    customer_id=customer_id,
                    currency="USD",
                    amount=100 if row["is_credit"] else 40,
                    event_type="merchant_adjustment",
                    fingerprint="0" * 64,
                    created_at=utcnow(),
                    **row,
                )
            )
    with tx() as s:
        old_credit = lot_views.entry_detail(s, customer_id, ids[0])
        old_debit = lot_views.entry_detail(s, customer_id, ids[1])
    assert (old_credit.lot, old_credit.consumed) == (None, None)
    assert (old_debit.lot, old_debit.consumed) == (None, None)


# -- listing lots ----------------------------------------------------------------------------


@pytest.fixture
def lots(tx, customer_id) -> dict[str, str]:
    """One lot in every state, credited in this order (newest last):

    - ``expired_taken``: 100, 30 spent while live, the other 70 taken by its expiration;
    - ``expired_left``: 50, past its expiry, its expiration not yet written;
    - ``consumed_never``: 40 without expiry, spent to 0;
    - ``active``: 500 without expiry;
    - ``consumed_expiring``: 20 expiring tomorrow, spent to 0 before then.
    """
    taken, moment = expiring_lot(tx, customer_id, 100, category="promotional")
    left, later = expiring_lot(tx, customer_id, 50)
    debit(tx, customer_id, 30)  # from the soonest-expiring lot: taken
    wait_until_past(max(moment, later))
    expire(tx, customer_id, taken)
    _, consumed_never = credit(tx, customer_id, 40)
    debit(tx, customer_id, 40)  # the only live lot
    _, active = credit(tx, customer_id, 500)
    _, consumed_expiring = credit(tx, customer_id, 20, expires_at=utcnow() + DAY)
    debit(tx, customer_id, 20)  # expires soonest: spent before the never-expiring 500
    return {
        "expired_taken": taken,
        "expired_left": left,
        "consumed_never": consumed_never,
        "active": active,
        "consumed_expiring": consumed_expiring,
    }


def listed(tx, customer_id: str, **kw) -> list[tuple[str, str]]:
    with tx() as s:
        now = utcnow()
        found = lot_views.list_lots(s, customer_id, now=now, **kw)
        return [(lot.id, lot_views.lot_status(lot, now)) for lot in found]


def test_lots_are_listed_newest_first_with_their_status(tx, customer_id, lots) -> None:
    assert listed(tx, customer_id) == [
        (lots["consumed_expiring"], "consumed"),
        (lots["active"], "active"),
        (lots["consumed_never"], "consumed"),
        (lots["expired_left"], "expired"),
        (lots["expired_taken"], "expired"),
    ]
    with tx() as s:
        by_id = {lot.id: lot for lot in lot_views.list_lots(s, customer_id)}
    assert (by_id[lots["expired_taken"]].remaining, by_id[lots["expired_taken"]].expired) == (0, 70)
    assert (by_id[lots["expired_left"]].remaining, by_id[lots["expired_left"]].expired) == (50, 0)
    check(tx)


@pytest.mark.parametrize(
    ("status", "names"),
    [
        ("active", ["active"]),
        ("expired", ["expired_left", "expired_taken"]),
        ("consumed", ["consumed_expiring", "consumed_never"]),
    ],
)
def test_lots_filter_by_status(tx, customer_id, lots, status, names) -> None:
    assert listed(tx, customer_id, status=status) == [(lots[n], status) for n in names]


def test_lots_page_like_the_other_lists(tx, customer_id, lots) -> None:
    every = [lot_id for lot_id, _ in listed(tx, customer_id)]
    pages = [
        [lot_id for lot_id, _ in listed(tx, customer_id, page_number=n, page_size=2)]
        for n in range(4)
    ]
    assert pages == [every[0:2], every[2:4], every[4:5], []]
    assert len(listed(tx, customer_id, page_size=100)) == 5


def test_lots_filter_by_currency(tx, customer_id) -> None:
    credit(tx, customer_id, 100)
    _, inr = credit(tx, customer_id, 9000, currency="INR")
    assert listed(tx, customer_id, currency="inr") == [(inr, "active")]
    assert len(listed(tx, customer_id, currency="USD")) == 1


@pytest.mark.parametrize(
    ("kw", "error", "field"),
    [
        ({"status": "live"}, ValidationFailed, "status"),
        ({"currency": "EUR"}, UnsupportedCurrency, "currency"),
        ({"page_size": 101}, ValidationFailed, "page_size"),
        ({"page_number": -1}, ValidationFailed, "page_number"),
    ],
)
def test_bad_lot_query_names_the_field(tx, customer_id, kw, error, field) -> None:
    with tx() as s, pytest.raises(error) as raised:
        lot_views.list_lots(s, customer_id, **kw)
    assert raised.value.field == field


def test_lots_of_an_unknown_customer(tx) -> None:
    with tx() as s, pytest.raises(CustomerNotFound):
        lot_views.list_lots(s, "cus_unknown")


# -- each wallet's expiry summary ------------------------------------------------------------


def test_expiry_summary_counts_live_lots_expiring_within_the_notice_window(
    tx, settings: Settings, customer_id
) -> None:
    lapsed, moment = expiring_lot(tx, customer_id, 1000)
    wait_until_past(moment)  # past its expiry, its expiration not yet written: not live
    start = utcnow()
    credit(tx, customer_id, 100, expires_at=start + DAY)
    credit(tx, customer_id, 200, expires_at=start + 3 * DAY, category="promotional")
    credit(tx, customer_id, 300, expires_at=start + 30 * DAY)
    credit(tx, customer_id, 400)
    _, spent = credit(tx, customer_id, 50, expires_at=start + DAY - timedelta(hours=1))
    debit(tx, customer_id, 50)  # spends the soonest-expiring live lot, ``spent``, to 0
    credit(tx, customer_id, 5000, currency="INR")  # never expires
    with tx() as s:
        summaries = lot_views.expiry_summaries(s, customer_id)
    usd = summaries["USD"]
    assert usd.expiring_soon == 300  # 100 + 200 within the default 7 days
    assert abs((usd.next_expiry_at - (start + DAY)).total_seconds()) < 0.001
    assert "INR" not in summaries
    with transaction(replace(settings, credit_expiry_notice_days=2)) as s:
        assert lot_views.expiry_summaries(s, customer_id)["USD"].expiring_soon == 100
    with transaction(replace(settings, credit_expiry_notice_days=31)) as s:
        assert lot_views.expiry_summaries(s, customer_id)["USD"].expiring_soon == 600
    assert listed(tx, customer_id, status="expired") == [(lapsed, "expired")]
    assert listed(tx, customer_id, status="consumed") == [(spent, "consumed")]


def test_wallet_without_expiring_credit_has_no_summary(tx, customer_id) -> None:
    credit(tx, customer_id, 100)
    with tx() as s:
        assert lot_views.expiry_summaries(s, customer_id) == {}


# -- breakage --------------------------------------------------------------------------------


def test_breakage_splits_expired_credit_by_currency_and_category(tx, customer_id, other_id):
    paid, m1 = expiring_lot(tx, customer_id, 100)
    promo, m2 = expiring_lot(tx, customer_id, 60, category="promotional")
    debit(tx, customer_id, 10)  # from ``paid``, the soonest to expire, while live
    inr, m3 = expiring_lot(tx, other_id, 500, currency="INR", category="promotional")
    wait_until_past(max(m1, m2, m3))
    start = utcnow()
    expired = [
        expire(tx, customer_id, paid),
        expire(tx, customer_id, promo),
        expire(tx, other_id, inr, currency="INR"),
    ]
    credit(tx, customer_id, 999)
    debit(tx, customer_id, 999)  # an ordinary debit in the period: not breakage
    end = utcnow() + timedelta(seconds=1)
    with tx() as s:
        lines = breakage.expired_between(s, start, end)
    assert [(x.currency, x.paid, x.promotional, x.total, x.lots) for x in lines] == [
        ("USD", 90, 60, 150, 2),
        ("INR", 0, 500, 500, 1),
    ]
    # The period is [start, end): an expiration at exactly ``end`` belongs to the next one.
    first = min(e.entry.created_at for e in expired)
    with tx() as s:
        before = breakage.expired_between(s, first - timedelta(hours=1), first)
        after = breakage.expired_between(s, end, end + DAY)
    assert [(x.currency, x.total, x.lots) for x in before + after] == [
        ("USD", 0, 0),
        ("INR", 0, 0),
        ("USD", 0, 0),
        ("INR", 0, 0),
    ]
    check(tx)


def test_breakage_period_must_be_forward_and_zoned(tx) -> None:
    now = utcnow()
    with tx() as s:
        for start, end, field in (
            (now, now, "to"),
            (now, now - DAY, "to"),
            (now.replace(tzinfo=None), now + DAY, "from"),
            (now, (now + DAY).replace(tzinfo=None), "to"),
        ):
            with pytest.raises(ValidationFailed) as raised:
                breakage.expired_between(s, start, end)
            assert raised.value.field == field
    with tx() as s:
        assert s.scalar(select(LedgerEntry.id)) is None

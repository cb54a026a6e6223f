"""ORM objects for rows the ledger wrote with SQL, built without another round trip."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.orm.attributes import instance_state, set_committed_value


def _new_instance(cls: type[Any]) -> Any:
    mapper = cls.__mapper__
    if not mapper.configured:  # new_instance() skips the init hook that would configure it
        configure_mappers()
    return mapper.class_manager.new_instance()


def transient(cls: type[Any], values: dict[str, Any]) -> Any:
    """A detached ``cls`` holding ``values``, built without the ORM's per-attribute events.

    ``cls(**values)`` fires an attribute event per column, which for a batch's thousand
    entries cost as much as the rest of the batch's Python work; callers only read them.
    """
    obj = _new_instance(cls)
    instance_state(obj).dict.update(values)
    return obj


def committed(
    session: Session, cls: type[Any], key: tuple[Any, ...], values: dict[str, Any]
) -> Any:
    """The session's object for a row just written by SQL, holding ``values`` as clean state.

    Callers get the same session-bound objects the ORM would give them (a wallet already
    loaded in this session is updated in place), without another round trip.
    """
    identity = cls.__mapper__.identity_key_from_primary_key(key)
    existing = session.identity_map.get(identity)
    if existing is not None:
        for name, value in values.items():
            set_committed_value(existing, name, value)
        return existing
    # What the ORM does when it loads a row: a new instance whose state holds the values as
    # committed (no history, nothing to flush), keyed by its identity, attached as persistent.
    obj = _new_instance(cls)
    state = instance_state(obj)
    state.dict.update(values)
    state.key = identity
    session.add(obj)
    return obj


def snapshot(obj: Any) -> Any:
    """A transient copy of a mapped ``obj`` that stays readable after its session rolls back."""
    mapper = type(obj).__mapper__
    return transient(type(obj), {a.key: getattr(obj, a.key) for a in mapper.column_attrs})

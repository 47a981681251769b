"""Chroma's metadata filter (``where``), evaluated on the metadata a snapshot stored, exactly as
Chroma evaluates it (a property test compares the two on a live server).

Supported: ``{"key": value}`` (equality), ``{"key": {"$eq" | "$ne" | "$gt" | "$gte" | "$lt" |
"$lte": value}}``, ``{"key": {"$in" | "$nin": [values of one type]}}``, ``{"key": {"$contains" |
"$not_contains": value}}`` for list values, and ``{"$and" | "$or": [filters]}``; several keys in
one object must all hold.  Chroma's rules, as measured on 1.5.9: an int and a float compare as
numbers, except that a float in the filter meets an int in the metadata truncated toward zero
(``{"n": 0.5}`` matches ``n: 0``; ``{"n": {"$gt": -1.5}}`` does not match ``n: -1``); a bool is
not a number; list elements are matched with their exact type (``$contains: 1.0`` does not find
``[1, 2]``); a record without the key matches ``$ne``, ``$nin`` and ``$not_contains`` and nothing
else.  Anything else is refused with one line naming the operator.
"""

from __future__ import annotations

from typing import Any

from chroma_backup.errors import UsageError

Where = dict[str, Any]
_COMPARE = {"$gt", "$gte", "$lt", "$lte"}
_VALUE_OPS = {"$eq", "$ne", *_COMPARE, "$in", "$nin", "$contains", "$not_contains"}
_ABSENT = object()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _exact(a: Any, b: Any) -> bool:
    return type(a) is type(b) and bool(a == b)


def _numeric(value: Any, operand: Any) -> tuple[Any, Any] | None:
    """The two sides as Chroma compares them, or None when one is not a number: an int in the
    metadata meets a float in the filter truncated toward zero."""
    if not (_number(value) and _number(operand)):
        return None
    if isinstance(value, int) and isinstance(operand, float):
        return value, int(operand)
    return value, operand


def _same(value: Any, operand: Any) -> bool:
    pair = _numeric(value, operand)
    return bool(pair[0] == pair[1]) if pair else _exact(value, operand)


def _bad(message: str) -> UsageError:
    return UsageError(f"--where: {message}")


def validate_where(where: Any) -> Where:
    """``where`` itself when it is a filter this module evaluates; else ``UsageError``."""
    if not isinstance(where, dict) or not where:
        raise _bad(f"expected a non-empty JSON object, got {where!r}")
    for key, value in where.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise _bad(f"{key} takes a non-empty list of filters")
            for item in value:
                validate_where(item)
        elif key.startswith("$"):
            raise _bad(f"unsupported operator {key}")
        elif isinstance(value, dict):
            if len(value) != 1:
                raise _bad(f"{key}: one operator per key, got {sorted(value)}")
            ((op, operand),) = value.items()
            if op not in _VALUE_OPS:
                raise _bad(f"{key}: unsupported operator {op}")
            if op in ("$in", "$nin") and (
                not isinstance(operand, list) or not operand or len({type(item) for item in operand}) > 1
            ):
                raise _bad(f"{key}: {op} takes a non-empty list of values of one type")
            if op in _COMPARE and not _number(operand):
                raise _bad(f"{key}: {op} takes a number, got {operand!r}")
        elif not isinstance(value, (str, int, float, bool)):
            raise _bad(f"{key}: expected a value or an operator, got {value!r}")
    return where


def matches(where: Where, metadata: dict[str, Any] | None) -> bool:
    """Whether a record with ``metadata`` passes the filter (validated by ``validate_where``)."""
    meta = metadata or {}
    for key, condition in where.items():
        if key == "$and":
            if not all(matches(item, meta) for item in condition):
                return False
        elif key == "$or":
            if not any(matches(item, meta) for item in condition):
                return False
        elif not _holds(meta.get(key, _ABSENT), condition):
            return False
    return True


def _holds(value: Any, condition: Any) -> bool:
    if not isinstance(condition, dict):
        return value is not _ABSENT and _same(value, condition)
    ((op, operand),) = condition.items()
    if value is _ABSENT:
        return op in ("$ne", "$nin", "$not_contains")
    if op == "$eq":
        return _same(value, operand)
    if op == "$ne":
        return not _same(value, operand)
    if op == "$in":
        return any(_same(value, item) for item in operand)
    if op == "$nin":
        return not any(_same(value, item) for item in operand)
    if op in ("$contains", "$not_contains"):
        found = isinstance(value, list) and any(_exact(item, operand) for item in value)
        return found if op == "$contains" else not found
    pair = _numeric(value, operand)
    if pair is None:
        return False
    left, right = pair
    if op == "$gt":
        return bool(left > right)
    if op == "$gte":
        return bool(left >= right)
    if op == "$lt":
        return bool(left < right)
    return bool(left <= right)

"""Cron expressions: parsed as cron parses them and their next run the one croniter (the
reference implementation, a test-only dependency) computes, for any expression of the grammar."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from chroma_backup.cron import Cron, CronError


def field(low: int, high: int, star_steps: bool = True) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    single = number.map(str)
    # (croniter reads a range of one value, "5-5", as "*": cron and this parser read it as "5")
    ranges = st.tuples(number, number).filter(lambda ab: ab[0] != ab[1]).map(lambda ab: f"{min(ab)}-{max(ab)}")
    # (in the day fields croniter counts "*/n" as a restriction, Vixie cron and this parser do not:
    # test_a_day_field_starting_with_a_star_does_not_restrict_the_day pins ours)
    bases = (st.sampled_from(["*"]) | ranges) if star_steps else ranges
    steps = st.tuples(bases, st.integers(1, max(1, (high - low) // 2))).map(lambda x: f"{x[0]}/{x[1]}")
    part = st.one_of(single, ranges, steps)
    return st.one_of(st.just("*"), st.lists(part, min_size=1, max_size=3).map(",".join))


EXPRESSIONS = st.tuples(field(0, 59), field(0, 23), field(1, 28, False), field(1, 12), field(0, 6, False)).map(" ".join)
MOMENTS = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda t: t.replace(tzinfo=timezone.utc)
)


@settings(max_examples=300, deadline=None)
@given(expression=EXPRESSIONS, after=MOMENTS)
def test_the_next_run_is_the_one_croniter_computes(expression, after):
    expected = croniter(expression, after).get_next(datetime)
    assert Cron.parse(expression).next_after(after) == expected, expression


@pytest.mark.parametrize(
    "expression,after,expected",
    [
        ("5 * * * *", "2026-12-05T17:04:59", "2026-12-05T17:05:00"),
        ("5 * * * *", "2026-12-05T17:05:00", "2026-12-05T18:05:00"),
        ("*/20 * * * *", "2026-12-05T17:41:00", "2026-12-05T18:00:00"),
        ("30 3 * * *", "2026-12-05T17:00:00", "2026-12-06T03:30:00"),
        ("0 0 * * sun", "2026-12-05T17:00:00", "2026-12-06T00:00:00"),
        ("0 0 1 jan *", "2026-12-05T17:00:00", "2027-01-01T00:00:00"),
        ("0 12 13 * 5", "2026-12-05T17:00:00", "2026-12-11T12:00:00"),  # Friday or the 13th
        ("5-5 * * * *", "2026-12-05T17:06:00", "2026-12-05T18:05:00"),
    ],
)
def test_common_schedules(expression, after, expected):
    at = datetime.fromisoformat(after).replace(tzinfo=timezone.utc)
    assert Cron.parse(expression).next_after(at) == datetime.fromisoformat(expected).replace(tzinfo=timezone.utc)


def test_a_day_field_starting_with_a_star_does_not_restrict_the_day():
    tuesday = datetime(2024, 1, 2, tzinfo=timezone.utc)
    assert Cron.parse("0 0 1 * */1").next_after(tuesday) == datetime(2024, 2, 1, tzinfo=timezone.utc)  # the 1st only
    assert Cron.parse("0 0 1 * 3").next_after(tuesday) == datetime(2024, 1, 3, tzinfo=timezone.utc)  # 1st or Wednesday


@pytest.mark.parametrize(
    "expression,message",
    [
        ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("60 * * * *", "minute: 60 is outside 0-59"),
        ("* * * * mon-sun", "day of week: range 'mon-sun' runs backwards"),
        ("*/0 * * * *", "minute: step '0' is not a positive number"),
        ("x * * * *", "minute: 'x' is not a number"),
        ("0 0 31 feb *", "'0 0 31 feb *' never matches"),
    ],
)
def test_a_bad_expression_says_what_is_wrong(expression, message):
    with pytest.raises(CronError) as error:
        Cron.parse(expression).next_after(datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(0))
    assert str(error.value) == message

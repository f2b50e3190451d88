"""The worklist's cells in a reading room's words: ages, elapsed waits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from diagnosis.templatetags.worklist import age, ago, elapsed

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # midday: the same date in any site time zone near UTC


@pytest.mark.parametrize(
    ("born", "expected"),
    [
        (None, ""),
        (date(2026, 11, 15), "0 mo"),
        (date(2026, 3, 2), "8 mo"),
        (date(2026, 3, 1), "9 mo"),
        (date(2024, 12, 2), "23 mo"),  # a day short of two years
        (date(2024, 12, 1), "2 y"),
        (date(1959, 12, 2), "66 y"),  # birthday tomorrow
        (date(1959, 12, 1), "67 y"),
    ],
)
def test_age(born, expected):
    assert age(born, NOW) == expected


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        (timedelta(seconds=30), "just now"),
        (timedelta(minutes=1), "1 min"),
        (timedelta(minutes=42, seconds=59), "42 min"),
        (timedelta(hours=1), "1 h"),
        (timedelta(hours=3, minutes=5), "3 h 5 min"),
        (timedelta(days=1), "1 d"),
        (timedelta(days=2, hours=4, minutes=30), "2 d 4 h"),
    ],
)
def test_elapsed(before, expected):
    assert elapsed(NOW - before, NOW) == expected


def test_ago_and_no_time():
    assert ago(NOW - timedelta(minutes=42), NOW) == "42 min ago"
    assert ago(NOW, NOW) == "just now"
    assert elapsed(None, NOW) == ago(None, NOW) == ""

"""The replay's clock runs over the bulk of the input: one absurd date can't become the clock."""

from __future__ import annotations

from otel_perf.offline import replay_bounds

NOW = 1_795_000_000 * 10**9
DAY = 86_400 * 10**9
YEAR_2200 = 7_258_118_400 * 10**9


def test_the_bulk_around_the_median_is_the_replay_span() -> None:
    week = [NOW - day * DAY for day in range(7)]
    assert replay_bounds([*week, YEAR_2200, 0], 30 * DAY, now_ns=NOW) == (NOW - 6 * DAY, NOW)


def test_a_date_no_export_can_carry_never_wins_even_against_one_real_trace() -> None:
    assert replay_bounds([NOW - DAY, YEAR_2200], 30 * DAY, now_ns=NOW) == (NOW - DAY, NOW - DAY)
    assert replay_bounds([0, NOW - DAY], 30 * DAY, now_ns=NOW) == (NOW - DAY, NOW - DAY)


def test_old_exports_replay_as_they_are() -> None:
    years_ago = NOW - 3 * 365 * DAY
    assert replay_bounds([years_ago, years_ago + DAY], 30 * DAY, now_ns=NOW) == (years_ago, years_ago + DAY)


def test_only_absurd_dates_still_give_bounds() -> None:
    assert replay_bounds([YEAR_2200], 30 * DAY, now_ns=NOW) == (YEAR_2200, YEAR_2200)
    assert replay_bounds([], 30 * DAY, now_ns=NOW) == (0, 0)

"""The load generator's pure parts: percentiles, windows and nginx's failures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from djdeploy.lab.load import Sample, nginx_failures, percentile, summarize


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([3.0], 0.99, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 0.75, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 1.0, 4.0),
        (list(range(1, 101)), 0.99, 99),
        (list(range(100, 0, -1)), 0.5, 50),
    ],
)
def test_nearest_rank_percentile(values: list[float], fraction: float, expected: float) -> None:
    assert percentile(values, fraction) == expected


@given(st.lists(st.floats(0, 100), min_size=1), st.floats(0.001, 1))
def test_percentile_is_one_of_the_values_and_bounded(values: list[float], fraction: float) -> None:
    result = percentile(values, fraction)
    assert result in values and min(values) <= result <= max(values)


@pytest.mark.parametrize(("values", "fraction"), [([], 0.5), ([1.0], 0), ([1.0], 1.5)])
def test_percentile_refuses_nonsense(values: list[float], fraction: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, fraction)


def test_summary_of_a_window_counts_failures_of_every_kind() -> None:
    samples = [
        Sample(10.0, 0.02, 200),
        Sample(11.0, 3.5, 200),
        Sample(11.5, 0.01, None, "ConnectionResetError: reset"),
        Sample(12.0, 0.03, 502),
        Sample(20.0, 0.02, 200),
    ]
    window = summarize(samples, since=11.0, until=20.0)
    assert (window["requests"], window["failed"], window["max"]) == (3, 2, 3.5)
    assert window["errors"] == ["ConnectionResetError: reset", "HTTP 502"]
    assert summarize(samples)["requests"] == 5
    empty = summarize(samples, since=30.0)
    assert (empty["requests"], empty["failed"], empty["p99"]) == (0, 0, None)


def test_nginx_failures_count_5xx_answers_and_retried_upstream_errors() -> None:
    lines = [
        '10.0.0.1 [2026-01-01T00:00:00+00:00] "GET /dashboard/ HTTP/1.1" 200 900 rt=0.020 ut=0.020 us=200',
        '10.0.0.1 [2026-01-01T00:00:01+00:00] "GET /dashboard/ HTTP/1.1" 502 150 rt=0.001 ut=0.000 us=502',
        '10.0.0.1 [2026-01-01T00:00:02+00:00] "GET /dashboard/ HTTP/1.1" 504 150 rt=60.0 ut=60.0 us=504',
        '10.0.0.1 [2026-01-01T00:00:03+00:00] "GET /dashboard/ HTTP/1.1" 200 900 rt=0.030 ut=0.000, 0.020 us=502, 200',
        '10.0.0.1 [2026-01-01T00:00:04+00:00] "GET /healthz HTTP/1.1" 200 90 rt=0.001 ut=0.001 us=200',
        "not a log line",
    ]
    assert nginx_failures(lines) == {"502": 1, "504": 1, "retried after 502": 1}

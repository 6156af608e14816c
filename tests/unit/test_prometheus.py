"""The hand-written Prometheus exposition: a histogram's buckets are cumulative, `le`
inclusive, and what lies above every bound is counted only in +Inf."""

from __future__ import annotations

from fogline.prometheus import Exposition, Histogram


def test_a_histogram_renders_cumulative_inclusive_buckets() -> None:
    hist = Histogram((0.01, 0.02))
    for value in (0.005, 0.01, 0.015, 0.5):
        hist.observe(value)
    exposition = Exposition("x_")
    exposition.histogram("wait_seconds", "Waits.", hist)
    assert exposition.text().splitlines() == [
        "# HELP x_wait_seconds Waits.",
        "# TYPE x_wait_seconds histogram",
        'x_wait_seconds_bucket{le="0.01"} 2',
        'x_wait_seconds_bucket{le="0.02"} 3',
        'x_wait_seconds_bucket{le="+Inf"} 4',
        "x_wait_seconds_sum 0.53",
        "x_wait_seconds_count 4",
    ]

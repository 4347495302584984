"""Pure helpers of `scripts/bench.py metrics` (no chain): medians, ratios and the report."""

from __future__ import annotations

import argparse

import pytest

from scripts.bench_metrics import add_metrics, report_lines, summarise


def test_summarise_takes_medians_and_the_ratio() -> None:
    o = summarise(
        without=[0.200, 0.300, 0.250],
        with_metrics=[0.280, 0.260, 0.270, 0.900],  # median of four: (0.27 + 0.28) / 2
        observe=[0.004, 0.006, 0.005],
        scrape=[0.002, 0.003, 0.001],
        page_bytes=40_000,
    )
    assert o.tick_s == pytest.approx(0.250)
    assert o.tick_with_metrics_s == pytest.approx(0.275)
    assert o.ratio == pytest.approx(1.1)
    assert o.direct_ratio == pytest.approx((0.250 + 0.005 + 0.002) / 0.250)  # 1.028
    assert o.samples == 3


@pytest.mark.parametrize("empty", ["without", "with_metrics", "observe", "scrape"])
def test_summarise_refuses_an_empty_series(empty: str) -> None:
    series = {"without": [0.2], "with_metrics": [0.3], "observe": [0.01], "scrape": [0.01]}
    series[empty] = []
    with pytest.raises(ValueError):
        summarise(**series, page_bytes=1)


def test_summarise_refuses_a_zero_tick() -> None:
    with pytest.raises(ValueError):
        summarise([0.0], [0.1], [0.01], [0.01], page_bytes=1)


def test_report_leads_with_the_ratio() -> None:
    o = summarise([0.25], [0.275], [0.005], [0.002], page_bytes=40_000)
    lines = report_lines(o, vaults=100)
    assert lines[0].startswith("metrics overhead on a 100-vault no-action tick")
    assert lines[0].endswith("1.100x (+10.0 %)")
    assert "tick without metrics 250.0 ms" in lines[1] and "275.0 ms" in lines[1]
    assert "observe_tick alone 5.00 ms" in lines[2] and "(40,000 bytes)" in lines[2]
    assert lines[2].endswith("= 1.028x")


def test_metrics_cli_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_metrics(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["metrics"])
    assert (args.vaults, args.rounds, args.history) == (100, 15, 250)
    with pytest.raises(SystemExit):
        parser.parse_args(["metrics", "--vaults", "0"])

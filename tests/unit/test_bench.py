"""The benchmark harness's own arithmetic and bookkeeping (no timing is asserted here)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bench.importtime import MARKER, self_time_by_package
from bench.report import RESULTS_BEGIN, RESULTS_END, Figure, Target, failures, record, render_markdown, render_text
from bench.stats import interleaved, median, paired_ratios, percentile


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 100])
def test_percentile_is_numpys_linear_definition(q):
    rng = random.Random(q)
    for n in (1, 2, 3, 10, 251):
        values = [rng.expovariate(1.0) for _ in range(n)]
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_percentile_refuses_nothing_and_out_of_range():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_median_and_paired_ratios():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert paired_ratios([2.0, 9.0, 1.0], [1.0, 3.0, 0.0]) == [2.0, 3.0]  # a zero baseline is skipped
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])


def test_interleaved_alternates_the_order_each_round():
    calls = []
    results = interleaved({"a": lambda: calls.append("a") or len(calls), "b": lambda: calls.append("b") or len(calls)}, 4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    # Each round's results sit at the same index, so they can be paired.
    assert results == {"a": [1, 4, 5, 8], "b": [2, 3, 6, 7]}


def figure(**kw) -> Figure:
    base = dict(key="k", title="t", unit="ms", value=3.0, baseline=2.0, baseline_name="floor", ratio=1.5, runs=5)
    base.update(kw)
    return Figure(**base)


def test_targets_bound_the_ratio_or_the_value():
    assert figure(target=Target("ratio", "<=", 2.0)).verdict == "pass"
    assert figure(target=Target("ratio", "<=", 1.4)).verdict == "FAIL"
    assert figure(target=Target("value", "<=", 1.0)).verdict == "FAIL"
    assert figure(target=Target("value", ">=", 3.0)).verdict == "pass"
    assert figure(target=None).verdict == "-"
    assert figure(target=Target("ratio", "<=", 2.0), ratio=None).verdict == "pending"
    with pytest.raises(ValueError):
        Target("speed", "<", 1.0)


def test_pending_figures_are_neither_passed_nor_failed():
    waiting = Figure.waiting("retrain_1000", "6. retrain", "not there yet", Target("ratio", "<=", 2.0))
    missed = figure(key="warm", target=Target("ratio", "<=", 1.0))
    assert waiting.verdict == "pending"
    assert failures([waiting, missed, figure()]) == [missed]
    text = render_text([waiting, missed])
    assert "pending" in text and "not there yet" in text and "FAIL" in text and "1.50x" in text


def test_the_markdown_table_has_one_row_per_figure_and_escapes_pipes():
    md = render_markdown([figure(title="a|b", note="why"), figure(title="c")])
    lines = md.splitlines()
    assert lines[0].startswith("| figure | value |") and len([row for row in lines if row.startswith("| ")]) == 3
    assert "a\\|b" in md and "- **a|b**: why" in md


def test_record_replaces_only_the_results_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(f"# Results\n\nanalysis above\n\n{RESULTS_BEGIN}\nold table\n{RESULTS_END}\n\nanalysis below\n")
    record(path, [figure(title="warm")], {"date": "2026-01-01", "nproc": "2"})
    text = path.read_text()
    assert "old table" not in text and "| warm |" in text and "- nproc: 2" in text
    assert text.startswith("# Results\n\nanalysis above") and text.endswith(f"{RESULTS_END}\n\nanalysis below\n")
    record(path, [figure(title="again")], {"date": "2026-01-02"})
    assert path.read_text().count(RESULTS_BEGIN) == 1 and "| warm |" not in path.read_text()


def test_record_needs_the_markers(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("no markers\n")
    with pytest.raises(ValueError):
        record(path, [figure()], {})


def test_import_time_is_attributed_to_top_level_packages_by_self_time():
    log = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       100 |        100 |     fastapi.params",
            "import time:        50 |        150 |   fastapi",
            "import time:        30 |        180 | score_handler",
            f"import time: {MARKER}",
            "import time:       400 |        400 |   botocore.client",
            "import time:        20 |        420 | boto3",
            "some other stderr line",
        ]
    )
    assert self_time_by_package(log) == {
        ("fastapi", False): 150,
        ("score_handler", False): 30,
        ("botocore", True): 400,
        ("boto3", True): 20,
    }

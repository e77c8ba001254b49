"""benchmarks/reference_mode.py's section of RESULTS.md survives run.py rewriting the file (report.KEPT_MARKER),
and its table states the command, the code, the machine and its load."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import reference_mode  # noqa: E402
from report import KEPT_MARKER, write_results  # noqa: E402


def test_appended_measurements_survive_a_rewrite_of_results_md(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nold tables\n")
    run = {
        "runs": [
            {
                "segment_s": 10.0,
                "segment_fit_s": 8.0,
                "segment_iterations": 90,
                "train_s": 12.0,
                "train_iterations": 90,
                "apply_s": 2.0,
                "ratio": 1.2,
                "dice_segment": 0.895,
                "dice_model": 0.894,
            }
        ]
    }
    lines = reference_mode.report(run, "python benchmarks/reference_mode.py", "9.0 / 9.0 / 9.0", "8.0 / 8.0 / 8.0")
    reference_mode.append(results, lines)
    reference_mode.append(results, lines)  # a second run adds a second section below the one marker
    text = results.read_text()
    assert text.count(KEPT_MARKER) == 1 and text.count("| 1 | 10.0 (8.0) | 90 | 12.0 | 90 | **1.20** |") == 2
    assert "Load average (1 / 5 / 15 min) 9.0 / 9.0 / 9.0 before" in text and "Code: " in text
    write_results({}, results)  # what run.py does
    rewritten = results.read_text()
    assert "old tables" not in rewritten and "## CPU" in rewritten
    assert rewritten.split(KEPT_MARKER, 1)[1] == text.split(KEPT_MARKER, 1)[1]

"""The benchmark harness (benchmarks/): scribble generator, scoring and an end-to-end --quick run."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from cases import add_scan_artefacts, make_case  # noqa: E402
from run import score  # noqa: E402
from unsupervised_seg.demo.simulated_scribbles import corrective_stroke, scribbles_from_truth  # noqa: E402


def test_scribbles_are_thin_strokes_inside_their_class(mni_2mm):
    volume, mask, truth = mni_2mm
    scribbles = scribbles_from_truth(truth, mask, volume.spacing)
    marked = scribbles > 0
    assert set(np.unique(scribbles[marked])) == {1, 2, 3}
    assert np.array_equal(scribbles[marked], truth[marked])  # every stroke voxel is in its class
    assert np.flatnonzero(marked.any(axis=(0, 1))).size == 3  # on three axial slices
    assert marked.sum() < 0.01 * mask.sum()  # strokes, not regions
    for k in (1, 2, 3):  # 2 mm erosion at 2 mm spacing: the in-plane 3x3 neighbourhood is all class k
        core = ndi.binary_erosion(truth == k, np.ones((3, 3, 1), bool))
        assert core[scribbles == k].all()
    labels = np.where(truth == 1, 2, truth)  # a "segmentation" that missed the CSF everywhere
    more = corrective_stroke(scribbles, truth, labels, mask, volume.spacing, class_id=1)
    added = (more > 0) & ~marked
    assert added.any() and set(np.unique(more[added])) == {1}
    assert np.all(truth[added] == 1) and np.all(labels[added] != 1)  # drawn through the error
    assert np.array_equal(more[marked], scribbles[marked])
    assert np.flatnonzero(added.any(axis=(0, 1))).size == 1  # one stroke on one slice
    with pytest.raises(ValueError, match="no error of class 1"):
        corrective_stroke(scribbles, truth, truth, mask, volume.spacing, class_id=1)


def test_dice_of_truth_is_one_and_of_shuffled_labels_lower(mni_4mm):
    volume, mask, truth = mni_4mm
    case = make_case("mni4mm")
    assert np.array_equal(case.truth, truth) and np.array_equal(case.roi, mask)
    assert score(case.truth, case)["dice_mean"] == pytest.approx(1.0)
    renamed = np.where(case.roi, (case.truth % 3) + 1, 0)  # 1->2, 2->3, 3->1: one-to-one matching undoes it
    assert score(renamed, case)["dice_mean"] == pytest.approx(1.0)
    shuffled = case.truth.copy()
    shuffled[case.roi] = np.random.default_rng(0).permutation(case.truth[case.roi])
    assert score(shuffled, case)["dice_mean"] < 0.6


def test_noisy_version_keeps_truth_and_changes_intensities(mni_4mm):
    volume, mask, truth = mni_4mm
    image = volume.data[0]
    noisy = add_scan_artefacts(image, truth)
    assert noisy.shape == image.shape and np.all(noisy >= 0)  # Rician magnitudes
    wm = truth == 3
    relative = np.std(noisy[wm] - image[wm]) / image[wm].mean()
    assert 0.04 < relative < 0.15  # 5 % noise plus the bias field
    assert np.array_equal(noisy, add_scan_artefacts(image, truth))  # seeded


def test_quick_run_end_to_end(tmp_path):
    """--quick on 4 mm, engine with 5 iterations, two baselines: results.json, RESULTS.md and plots."""
    cmd = [
        sys.executable,
        str(BENCH / "run.py"),
        "--quick",
        "--cases",
        "mni4mm",
        "--methods",
        "engine,kmeans,otsu",
        "--out",
        str(tmp_path),
        "--threads",
        "1",
        "--engine-config",
        "n_clusters=16",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    run = json.loads((tmp_path / "results.json").read_text())["cpu"]
    assert run["quick"] and run["engine_config"]["max_iter"] == 5 and run["engine_config"]["n_clusters"] == 16
    methods = run["cases"]["mni4mm"]["methods"]
    assert set(methods) == {"engine", "kmeans", "otsu"}
    assert all(m["status"] == "ok" for m in methods.values())
    assert methods["engine"]["iterations"] <= 5 and methods["engine"]["config"]["n_labels"] == 3
    assert len(methods["engine"]["history"]) == methods["engine"]["iterations"]
    assert methods["kmeans"]["dice_mean"] > 0.8  # intensity clustering of the template is easy
    assert set(methods["kmeans"]["dice_per_class"]) == {"CSF", "GM", "WM"}
    for m in methods.values():
        assert 0 < m["rss_after_loading_mb"] <= m["peak_rss_mb"] < 8000
    assert methods["engine"]["peak_rss_mb"] > methods["kmeans"]["peak_rss_mb"]  # torch is loaded only there
    text = (tmp_path / "RESULTS.md").read_text()
    assert "QUICK run" in text and "### mni4mm" in text and "--quick" in text
    for png in ("overlay_mni4mm.png", "dice_vs_seconds_cpu.png", "engine_history_cpu.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tuning_sweep_writes_one_row_per_variant(tmp_path):
    cmd = [
        sys.executable,
        str(BENCH / "tune.py"),
        "--cases",
        "mni4mm",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
        "--grid",
        '[{"max_iter": 3}, {"max_iter": 3, "n_clusters": 8}]',
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads((tmp_path / "tuning.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == [{"max_iter": 3}, {"max_iter": 3, "n_clusters": 8}]
    assert all(r["cases"]["mni4mm"]["status"] == "ok" and r["cases"]["mni4mm"]["iterations"] <= 3 for r in rows)
    text = (tmp_path / "TUNING.md").read_text()
    assert "| max_iter=3, n_clusters=8 | " in text and "--grid" in text
    refused = subprocess.run(
        [sys.executable, str(BENCH / "tune.py"), "--cases", "colin1mm", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "held out" in refused.stderr


def test_cases_built_once_travel_to_a_run_elsewhere(tmp_path):
    """--build-only writes a volume's case file; a later run (here --in-process, as on a GPU machine where a
    process start costs more than a fit) makes its stroke case from that file alone, the same as built from
    the source data, and saves results after every case."""
    cases = tmp_path / "cases"
    build = [sys.executable, str(BENCH / "run.py"), "--cases", "mni4mm", "--case-dir", str(cases), "--build-only"]
    done = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in cases.iterdir()) == ["mni4mm.npz"]
    cmd = [sys.executable, str(BENCH / "run.py"), "--quick", "--cases", "mni4mm_scribbles", "--methods", "engine"]
    cmd += ["--case-dir", str(cases), "--in-process", "--out", str(tmp_path / "out"), "--threads", "1", "--no-plots"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mni4mm_scribbles: strokes on" in done.stdout and "building" not in done.stdout
    from cases import Case

    made_here = Case.load(cases / "mni4mm_scribbles.npz")
    built = make_case("mni4mm_scribbles")
    assert np.array_equal(made_here.scribbles, built.scribbles) and made_here.description == built.description
    engine = json.loads((tmp_path / "out" / "results.json").read_text())["cpu"]["cases"]["mni4mm_scribbles"]
    result = engine["methods"]["engine"]
    assert result["status"] == "ok" and result["in_process"] and result["stroked_kept"] == 1.0
    assert "refinement" in result


def test_devset_report_shows_gpu_memory_and_refinement():
    from report import _dice_cell, _refinement_cell

    gpu = {"status": "ok", "dice_mean": 0.9051, "seconds": 7.34, "peak_gpu_mb": 286.2}
    assert _dice_cell(gpu) == "0.905 (7.3 s, 286 MB GPU)"
    assert _dice_cell({"status": "ok", "dice_mean": 0.9, "seconds": 25.2}) == "0.900 (25 s)"
    refined = {"refinement": {"time_ratio": 0.352, "seconds": 1.58, "dice": 0.825}}
    assert _refinement_cell(refined) == "35.2% (1.6 s), Dice 0.825"


def test_devset_acceptance_counts_each_criterion_and_names_the_cases_that_miss_it():
    from report import devset_acceptance

    def ok(dice, seconds=10.0, **extra):
        return {"status": "ok", "dice_mean": dice, "seconds": seconds, **extra}

    strokes = {"stroked_kept": 1.0, "stroked_classes_missing": []}
    run = {
        "cases": {
            "mni2mm": {"scribbled_voxels": 0, "methods": {"engine": ok(0.90, 70.0), "gmm": ok(0.87), "otsu": ok(0.80)}},
            "ct": {"scribbled_voxels": 0, "methods": {"engine": ok(0.90), "atropos": ok(0.98)}},
            "ct_painted": {
                "scribbled_voxels": 9,
                "methods": {
                    "engine": ok(0.89, refinement={"time_ratio": 0.2}, **strokes),
                    "growcut": ok(0.85),
                },
            },
            "mni2mm_sparse": {
                "scribbled_voxels": 9,
                "methods": {
                    "engine": ok(
                        0.92, refinement={"time_ratio": 0.1}, stroked_kept=0.98, stroked_classes_missing=["CSF"]
                    ),
                    "growcut": ok(0.93),
                },
            },
        }
    }
    lines = devset_acceptance(run)
    assert lines == [
        "- unsupervised, engine >= best classical: 1 of 2 (not: ct)",
        "- strokes, engine >= Grow from seeds: 1 of 2 (not: mni2mm_sparse)",
        "- strokes, engine >= its own unsupervised result: 1 of 2 (not: ct_painted)",
        "- strokes, every stroked class present: 1 of 2 (not: mni2mm_sparse)",
        "- strokes, >= 99 % of stroked voxels kept: 1 of 2 (not: mni2mm_sparse)",
        "- refinement <= 15 % of the first fit's time: 1 of 2 (not: ct_painted 20.0%)",
        "- mni2mm: 0.900 in 70.0 s (>= 0.89 in <= 60 s): NOT met",
    ]

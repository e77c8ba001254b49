"""Tests of UnsupervisedSegLib (beside the Slicer module): everything the module computes that is not a
Slicer call, run without Slicer.

Nothing here needs slicer-core (test_slicer_scene.py runs the module on real MRML). What these tests
do run is the exact command line the module builds, as a subprocess, on the bundled MNI152 sample
written as NRRD the way Slicer writes volumes, with a scribble label map, and read the result back
with slicerio as the segments the module would create. The engine is used only through its command
line and its public names, as the module uses it.
"""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import nrrd
import numpy as np
import pytest
from UnsupervisedSegLib import install
from UnsupervisedSegLib.command import ENGINE_ENVIRONMENT, RunFiles, RunParameters, build_command
from UnsupervisedSegLib.monitor import FIT_END, RunMonitor, parse_progress_line, progress_fraction
from UnsupervisedSegLib.segments import (
    FALLBACK_COLOR,
    compact_scribbles,
    result_segments,
    same_grid,
    scribble_classes,
    stack_channels,
)

# Slicer's NRRD files are in LPS; the engine's Volume affine is index -> RAS.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
ROOT = Path(__file__).resolve().parents[3]
MODULE_DIR = ROOT / "UnsupervisedSeg"

TISSUE_CLASSES = {1: "CSF", 2: "grey matter", 3: "white matter"}
TISSUE_COLORS = {1: (0.2, 0.4, 1.0), 2: (0.9, 0.5, 0.3), 3: (1.0, 1.0, 0.8)}


def write_slicer_nrrd(path, array, ijk_to_ras):
    """Write ``array`` ((I, J, K), or (C, I, J, K) for a vector volume) with the header layout of
    Slicer's volume writer: LPS space, raw encoding, component axis first and of kind "vector"."""
    ijk_to_lps = RAS_TO_LPS @ np.asarray(ijk_to_ras, float)
    directions = ijk_to_lps[:3, :3].T  # one row per array axis
    vector = array.ndim == 4
    header = {
        "space": "left-posterior-superior",
        "encoding": "raw",
        "space origin": ijk_to_lps[:3, 3],
        "space directions": (np.vstack([np.full(3, np.nan), directions]) if vector else directions),
        "kinds": (["vector"] if vector else []) + ["domain"] * 3,
    }
    nrrd.write(str(path), np.ascontiguousarray(array), header, index_order="F")


# ------------------------------------------------------------------------------------ installing


def test_requirements_from_the_engine_metadata_leave_slicer_packages_alone():
    to_install, kept = install.requirements_to_install(importlib.metadata.requires("unsupervised-seg"))
    kept_names = {install.normalise_package_name(r.split(">")[0].split("=")[0].split("<")[0]) for r in kept}
    assert kept_names == {"numpy", "simpleitk", "torch"}
    install_names = {
        install.normalise_package_name(r.split("[")[0].split(">")[0].split("=")[0].split("<")[0]) for r in to_install
    }
    assert {"monai", "nibabel", "slicerio"} <= install_names
    assert not install_names & {"numpy", "simpleitk", "torch", "pytest"}  # pytest: only in the dev extra
    assert all(" " not in r for r in to_install)


def test_requirements_parse_the_forms_pip_metadata_uses():
    to_install, kept = install.requirements_to_install(
        [
            "nibabel (>=2.3.0)",
            "monai[nibabel]>=1.3",
            'pytest>=7; extra == "dev"',
            "SimpleITK>=2.2",
            "scikit_image >= 0.21",
            "Torch<3,>=2.0",
            'tomli>=1; python_version < "3.11"',
        ]
    )
    assert to_install == [
        "nibabel>=2.3.0",
        "monai[nibabel]>=1.3",
        "scikit_image>=0.21",
        'tomli>=1; python_version < "3.11"',
    ]
    assert kept == ["SimpleITK>=2.2", "Torch<3,>=2.0"]
    with pytest.raises(ValueError, match="cannot parse"):
        install.requirements_to_install(["-e ."])


def test_constraints_pin_the_installed_versions():
    versions = install.installed_versions()
    assert versions["numpy"] == importlib.metadata.version("numpy")
    assert versions["torch"] == importlib.metadata.version("torch")
    text = install.pin_constraints({**versions, "not-installed-package": None})
    assert f"numpy=={versions['numpy']}\n" in text and f"torch=={versions['torch']}\n" in text
    assert "not-installed-package" not in text
    assert install.installed_versions(["surely-not-a-package-name"]) == {"surely-not-a-package-name": None}


def test_version_comparison():
    assert install.version_at_least("2.1.0+cu118", "2.0")
    assert install.version_at_least("2.0", "2.0.0")
    assert not install.version_at_least("1.13.1", "2.0")
    assert not install.version_at_least(None, "0.1")
    assert install.version_at_least(importlib.metadata.version("torch"), install.MINIMUM_TORCH_VERSION)


def test_lib_imports_without_numpy_torch_or_the_engine():
    """Right after a --no-deps install (and before any), the module computes what to install, builds
    the command line and follows progress: UnsupervisedSegLib (all but its Slicer-only process.py)
    must load without numpy, torch, MONAI or the engine."""
    script = """
import sys
for name in ("numpy", "torch", "monai", "unsupervised_seg"):
    sys.modules[name] = None  # any import of these now fails
from UnsupervisedSegLib import command, install, monitor, segments
requirements, kept = install.requirements_to_install(["monai>=1.3", "numpy>=1.23"])
print(requirements, kept, install.version_at_least("2.1", install.MINIMUM_TORCH_VERSION),
      command.build_command("in.nrrd", None, "out.seg.nrrd", command.RunParameters())[2:4],
      monitor.RunMonitor().fraction, segments.cluster_name(4))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(MODULE_DIR), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['monai>=1.3'] ['numpy>=1.23'] True ['unsupervised_seg', 'segment'] 0.0 Cluster 4"


def test_engine_install_source(tmp_path):
    """A checkout holding the module installs itself; UNSUPERVISED_SEG_PIP_SOURCE overrides; else the release."""
    assert install.engine_install_source(MODULE_DIR, environment={}) == str(ROOT)
    assert install.engine_install_source(tmp_path / "UnsupervisedSeg", environment={}) == (
        f"unsupervised-seg>={install.MINIMUM_ENGINE_VERSION}"
    )
    wheel = "/wheels/unsupervised_seg-0.2.0-py3-none-any.whl"
    assert install.engine_install_source(MODULE_DIR, environment={install.PIP_SOURCE_VARIABLE: wheel}) == wheel


# ------------------------------------------------------------------------------------ command line


def options(command):
    """{option: value or True} of a command line after its positional input."""
    found, index = {}, 5  # python -m unsupervised_seg segment IN -o OUT ...: options start at -o
    while index < len(command):
        flag = command[index]
        takes_value = index + 1 < len(command) and not command[index + 1].startswith("--")
        found[flag] = command[index + 1] if takes_value else True
        index += 2 if takes_value else 1
    return found


def test_build_command_spells_the_engine_options(tmp_path):
    files = RunFiles(tmp_path)
    params = RunParameters(n_labels=5, max_iter=120, n_clusters=24, device="cpu", seed=3)
    names = {1: "Läsion", 2: 'grey "matter"'}
    command = build_command(
        files.input,
        files.scribbles,
        files.output,
        params,
        model_out=files.model,
        python_executable="/opt/PythonSlicer",
        mask_path=files.mask,
        class_names=names,
    )
    assert command[:6] == ["/opt/PythonSlicer", "-m", "unsupervised_seg", "segment", str(files.input), "-o"]
    assert options(command) == {
        "-o": str(files.output),
        "--format": "seg.nrrd",
        "--progress": "json",
        "--max-iter": "120",
        "--device": "cpu",
        "--seed": "3",
        "--clusters": "24",
        "--n-labels": "5",
        "--scribbles": str(files.scribbles),
        "--mask": str(files.mask),
        "--class-names": command[command.index("--class-names") + 1],
        "--save-model": str(files.model),
    }
    assert json.loads(options(command)["--class-names"]) == {"1": "Läsion", "2": 'grey "matter"'}

    refine = build_command(
        files.input,
        files.scribbles,
        files.output,
        params.for_refine(),
        model_in=tmp_path / "previous.pt",
        model_out=files.model,
    )
    assert options(refine)["--init-model"] == str(tmp_path / "previous.pt")
    assert options(refine)["--max-iter"] == str(params.refine_iter)
    assert "--clusters" not in refine  # the model fixes the clusters
    assert refine[0] == sys.executable


def test_the_engine_command_line_accepts_the_command(tmp_path):
    """The engine parses both commands (Apply, Refine): it gets as far as reading the input, which is
    missing here, and says so on one line (an option it does not know would be a usage error, exit 2)."""
    files = RunFiles(tmp_path)
    params = RunParameters(n_labels=5, max_iter=3, n_clusters=24, device="cpu")
    for command in (
        build_command(
            files.input,
            files.scribbles,
            files.output,
            params,
            model_out=files.model,
            mask_path=files.mask,
            class_names={1: "a"},
        ),
        build_command(
            files.input,
            files.scribbles,
            files.output,
            params.for_refine(),
            model_in=files.model,
            model_out=tmp_path / "refined.pt",
            class_names={1: "a"},
        ),
    ):
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env={**os.environ, **ENGINE_ENVIRONMENT}
        )
        assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
        events = [parse_progress_line(line) for line in out.stdout.splitlines()]
        errors = [e for e in events if e and e["stage"] == "error"]
        assert errors and str(files.input) in RunMonitor._error_text(errors[0]), out.stdout


def test_build_command_without_options_uses_no_optional_flags(tmp_path):
    command = build_command("in.nrrd", None, "out.seg.nrrd", RunParameters())
    for flag in ("--scribbles", "--mask", "--class-names", "--save-model", "--init-model", "--n-labels"):
        assert flag not in command


@pytest.mark.parametrize(
    "params, n_classes, problem",
    [
        (RunParameters(device="gpu"), 0, "device"),
        (RunParameters(n_labels=40, n_clusters=32), 0, "exceeds"),
        (RunParameters(n_labels=2), 3, "scribble segments"),
        (RunParameters(max_iter=0), 0, "iterations"),
        (RunParameters(n_clusters=1), 0, "clusters"),
    ],
)
def test_build_command_refuses_parameters_that_cannot_run(params, n_classes, problem):
    names = {k: f"class {k}" for k in range(1, n_classes + 1)}
    with pytest.raises(ValueError, match=problem):
        build_command("in.nrrd", None, "out.seg.nrrd", params, class_names=names)


# ------------------------------------------------------------------------------------ progress


def test_parse_progress_line_ignores_everything_but_progress_objects():
    event = parse_progress_line('{"stage": "fit", "iteration": 3, "max_iter": 10}\n')
    assert event == {"stage": "fit", "iteration": 3, "max_iter": 10}
    assert parse_progress_line(b'{"stage": "done", "n_labels": 4}') == {"stage": "done", "n_labels": 4}
    for line in [
        "",
        "   \n",
        "UserWarning: something",
        '{"stage": "fit", "iter',
        "[1, 2]",
        '{"no": "stage"}',
        '{"stage": 5}',
        "unsupervised-seg: error: x.nii: cannot read",
        "{not json}",
    ]:
        assert parse_progress_line(line) is None, line


def test_progress_fraction_follows_the_run():
    events = [{"stage": "fit", "iteration": i, "max_iter": 50} for i in (1, 25, 50)]
    events += [{"stage": "predict"}, {"stage": "done"}, {"stage": "written", "path": "x"}]
    fractions = [progress_fraction(e) for e in events]
    assert fractions == sorted(fractions) and fractions[0] > 0 and fractions[-1] == 1.0
    assert fractions[1] == pytest.approx(FIT_END / 2)
    assert progress_fraction({"stage": "error", "message": "x"}) is None
    assert progress_fraction({"stage": "fit", "iteration": 3}) == 0.0  # no max_iter: no guess


def test_progress_follows_the_engines_estimate_not_max_iter():
    """A run that converges at iteration 90 of max_iter 1000 fills the bar, not 9 % of it."""
    events = [
        {"stage": "fit", "iteration": i, "max_iter": 1000, "fraction": f, "changed": c, "tolerance": 0.005}
        for i, f, c in ((10, 0.2, 0.35), (50, 0.6, 0.04), (90, 1.0, 0.004))
    ]
    fractions = [progress_fraction(e) for e in events]
    assert fractions == [pytest.approx(FIT_END * f) for f in (0.2, 0.6, 1.0)]
    clock = iter([0.0, 10.0, 50.0]).__next__
    monitor = RunMonitor(clock=clock)
    for event in events[:2]:
        monitor.feed(json.dumps(event))
    assert "1000" not in monitor.status and "labels changed (stops below 0.5 %)" in monitor.status
    assert "about 40 s left" in monitor.status  # 40 s from 0.2 to 0.6: 0.4 to go at that pace


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_monitor_reports_progress_eta_and_success():
    clock = FakeClock()
    monitor = RunMonitor(clock=clock)
    assert monitor.feed("UserWarning: some library noise\n") is None
    monitor.feed(json.dumps({"stage": "fit", "iteration": 1, "max_iter": 10, "n_labels": 9, "loss": 2.5}))
    clock.now += 0.5
    monitor.feed(json.dumps({"stage": "fit", "iteration": 2, "max_iter": 10, "n_labels": 7, "loss": 2.0}))
    assert monitor.status == "Iteration 2/10, 7 labels, loss 2.000, at most 4 s left"
    assert monitor.fraction == pytest.approx(0.2 * FIT_END)
    monitor.feed(json.dumps({"stage": "predict", "patch_size": [48, 48, 48]}))
    monitor.feed(json.dumps({"stage": "done", "iteration": 6, "n_labels": 4, "stop_reason": "converged"}))
    assert monitor.status.startswith("4 labels after 6 iterations (converged)")
    monitor.feed(
        json.dumps(
            {
                "stage": "written",
                "path": "/tmp/r.seg.nrrd",
                "n_labels": 4,
                "iterations": 6,
                "stop_reason": "converged",
                "seconds": 75.2,
                "device": "cuda",
            }
        )
    )
    assert monitor.fraction == 1.0 and monitor.written == "/tmp/r.seg.nrrd"
    assert monitor.outcome(0) == (True, "4 labels after 6 iterations (converged), 1 min 15 s on cuda")
    assert monitor.log == ["UserWarning: some library noise"]


def test_monitor_names_the_engine_error():
    monitor = RunMonitor()
    monitor.feed("unsupervised-seg: error: /tmp/x/scribbles.nrrd: label map is on another grid\n")
    monitor.feed(
        json.dumps({"stage": "error", "path": "/tmp/x/scribbles.nrrd", "message": "label map is on another grid"})
    )
    assert monitor.outcome(1) == (False, "/tmp/x/scribbles.nrrd: label map is on another grid")


def test_monitor_falls_back_to_the_last_log_line():
    monitor = RunMonitor()
    for line in ["Traceback (most recent call last):", '  File "x.py", line 1', "MemoryError: out of memory", ""]:
        monitor.feed(line)
    assert monitor.outcome(137) == (False, "The engine failed (exit code 137): MemoryError: out of memory")
    assert RunMonitor().outcome(0) == (False, "The engine finished without writing a result")


# ------------------------------------------------------------------------------------ segments


def test_scribble_classes_follow_the_export_order():
    names, colors = scribble_classes([("Liver", (0.8, 0.2, 0.1)), ("Spleen", [0.1, 0.9, 0.2, 1.0])])
    assert names == {1: "Liver", 2: "Spleen"}
    assert colors == {1: (0.8, 0.2, 0.1), 2: (0.1, 0.9, 0.2)}


def test_compact_scribbles_drops_unpainted_segments(mni_4mm):
    _, _, tissues = mni_4mm
    middle = tissues.shape[2] // 2
    exported = np.zeros(tissues.shape, np.int16)  # the export of 4 segments, the second left unpainted
    for old, new in ((1, 1), (2, 3), (3, 4)):
        exported[:, :, middle][tissues[:, :, middle] == old] = new
    names = {1: "CSF", 2: "unpainted", 3: "grey matter", 4: "white matter"}
    colors = {k: TISSUE_COLORS.get(k, (0.5, 0.5, 0.5)) for k in names}
    labels, new_names, new_colors = compact_scribbles(exported, names, colors)
    assert new_names == TISSUE_CLASSES
    assert new_colors == {1: colors[1], 2: colors[3], 3: colors[4]}
    for k in (1, 2, 3):
        assert np.array_equal(labels[:, :, middle] == k, tissues[:, :, middle] == k)
    assert not labels[:, :, :middle].any()
    with pytest.raises(ValueError, match="empty"):
        compact_scribbles(np.zeros((4, 4, 4), np.int16), {1: "a"}, {})


def test_result_segments_name_scribble_classes_and_clusters():
    in_file = {0: None, 5: (0.1, 0.2, 0.3), 1: (0, 0, 0), 2: (0, 0, 0), 3: (0, 0, 0), 4: [0.4, 0.5, 0.6, 1.0]}
    table = result_segments(in_file, TISSUE_CLASSES, TISSUE_COLORS)
    assert [t["value"] for t in table] == [1, 2, 3, 4, 5]
    assert [t["name"] for t in table] == ["CSF", "grey matter", "white matter", "Cluster 4", "Cluster 5"]
    assert [t["color"] for t in table[:3]] == [TISSUE_COLORS[k] for k in (1, 2, 3)]
    assert [t["color"] for t in table[3:]] == [(0.4, 0.5, 0.6), (0.1, 0.2, 0.3)]  # the engine's, from the file
    assert [t["color"] for t in result_segments([2, 1], {1: "a"})] == [FALLBACK_COLOR, FALLBACK_COLOR]


def test_same_grid_and_stack_channels(mni_4mm):
    volume, _, _ = mni_4mm
    shape, affine = volume.spatial_shape, volume.affine
    assert same_grid(shape, affine, shape, affine + 1e-5)
    shifted = affine.copy()
    shifted[0, 3] += 2.0
    assert not same_grid(shape, affine, shape, shifted)
    assert not same_grid(shape, affine, shape[::-1], affine)
    t1 = volume.data[0].transpose(2, 1, 0)  # (K, J, I) as slicer.util.arrayFromVolume gives it
    stacked = stack_channels([t1, np.sqrt(t1)])
    assert stacked.shape == t1.shape + (2,) and stacked.dtype == np.float32
    with pytest.raises(ValueError, match="one shape"):
        stack_channels([t1, t1[:-1]])


def test_vector_nrrd_from_slicer_is_read_as_channels(tmp_path, mni_4mm):
    """Extra channels reach the engine as the components of one vector NRRD."""
    from unsupervised_seg import load_volume

    volume, _, _ = mni_4mm
    t1 = volume.data[0]
    stacked = stack_channels([t1.transpose(2, 1, 0), (t1**2).transpose(2, 1, 0)])  # (K, J, I, C)
    path = tmp_path / "input.nrrd"
    write_slicer_nrrd(path, stacked.transpose(3, 2, 1, 0), volume.affine)  # pynrrd wants (C, I, J, K)
    loaded = load_volume(path)
    assert loaded.n_channels == 2 and loaded.spatial_shape == volume.spatial_shape
    np.testing.assert_allclose(loaded.data[1], t1**2, rtol=1e-6)
    np.testing.assert_allclose(loaded.affine, volume.affine, atol=1e-4)


# ------------------------------------------------------------------------------------ end to end


def run_like_the_module(command):
    """Run the engine as the module does (merged stdout/stderr, line by line into a RunMonitor)."""
    env = {**os.environ, **ENGINE_ENVIRONMENT, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    monitor, fractions = RunMonitor(), []
    for line in process.stdout:
        monitor.feed(line)
        fractions.append(monitor.fraction)
    returncode = process.wait(timeout=300)
    return monitor, fractions, returncode


def module_segments(path, class_names, class_colors):
    """The segments the module shows for a result file: (labels (I, J, K), [{"value", "name", "color"}])
    after it applies ``result_segments`` to what Slicer reads, checked against the file's own table."""
    import slicerio

    segmentation = slicerio.read_segmentation(str(path))
    in_file = {s["labelValue"]: s for s in segmentation["segments"]}
    shown = result_segments({v: s.get("color") for v, s in in_file.items()}, class_names, class_colors)
    for entry in shown:  # the file already carries the names the module shows, and the clusters' colours
        assert in_file[entry["value"]]["name"] == entry["name"]
        if entry["value"] not in (class_colors or {}):
            np.testing.assert_allclose(entry["color"], in_file[entry["value"]]["color"][:3])
    return segmentation, shown


@pytest.fixture(scope="module")
def slicer_inputs(tmp_path_factory, mni_4mm):
    """Files as the module exports them (volume, brain ROI) and scribble strokes (1 CSF, 2 grey matter,
    3 white matter) for the tests to write. The export itself is Slicer's: test_slicer_scene.py."""
    volume, mask, tissues = mni_4mm
    files = RunFiles(tmp_path_factory.mktemp("slicer_run"))
    write_slicer_nrrd(files.input, volume.data[0].astype(np.float32), volume.affine)
    write_slicer_nrrd(files.mask, mask.astype(np.uint8), volume.affine)
    return files, volume, mask, scribbles_inside(tissues)


def scribbles_inside(tissues):
    """Scribbles as a user draws them: for each tissue, on the axial slice where its interior is
    largest, the voxels whose in-plane neighbours all share its label (not the partial-volume rim)."""
    from scipy import ndimage

    strokes = np.zeros(tissues.shape, np.int16)
    for k in TISSUE_CLASSES:
        interiors = [ndimage.binary_erosion(tissues[:, :, z] == k) for z in range(tissues.shape[2])]
        z = int(np.argmax([i.sum() for i in interiors]))
        strokes[:, :, z][interiors[z]] = k
    return strokes


def scribble_agreement(labels, strokes, classes):
    """The fraction of scribbled voxels that ended up with their class's label; asserts that each
    class's label is the most frequent one among the voxels scribbled as that class."""
    for k in classes:
        assert np.bincount(labels[strokes == k]).argmax() == k, (k, np.bincount(labels[strokes == k]))
    return float((labels[strokes > 0] == strokes[strokes > 0]).mean())


def test_module_command_line_on_a_real_volume_then_refine(slicer_inputs, tmp_path):
    """Apply with grey and white matter scribbled, then Refine after erasing strokes.

    (Refine after adding a segment, which retrains the whole network, runs in the module's self-test
    and in test_slicer_scene.py, through the module's logic on real MRML.)"""
    files, volume, mask, strokes = slicer_inputs  # strokes: 1 CSF, 2 grey matter, 3 white matter
    # segment order in the scribble segmentation: grey matter, white matter
    first_strokes = np.select([strokes == 2, strokes == 3], [1, 2], 0).astype(np.int16)
    names = {1: "grey matter", 2: "white matter"}
    colors = {1: TISSUE_COLORS[2], 2: TISSUE_COLORS[3]}
    write_slicer_nrrd(files.scribbles, first_strokes, volume.affine)
    # a short Apply; Refine with the module's default number of iterations
    params = RunParameters(max_iter=30, n_clusters=16, device="cpu")
    command = build_command(
        files.input,
        files.scribbles,
        files.output,
        params,
        model_out=files.model,
        mask_path=files.mask,
        class_names=names,
    )
    monitor, fractions, returncode = run_like_the_module(command)
    ok, message = monitor.outcome(returncode)
    assert ok, (message, monitor.log[-5:])
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(e["stage"] == "fit" for e in monitor.events) and "labels after" in message
    assert Path(monitor.written) == files.output and files.model.is_file()

    segmentation, shown = module_segments(files.output, names, colors)
    labels = segmentation["voxels"]
    assert labels.shape == volume.spatial_shape
    np.testing.assert_allclose(segmentation["ijkToLPS"], RAS_TO_LPS @ volume.affine, atol=1e-4)
    values = sorted(int(v) for v in np.unique(labels) if v)
    assert [s["value"] for s in shown] == values and values[:2] == [1, 2] and len(values) >= 3
    assert [s["name"] for s in shown] == list(names.values()) + [f"Cluster {v}" for v in values[2:]]
    assert [s["color"] for s in shown[:2]] == list(colors.values())
    assert len({s["color"] for s in shown}) == len(shown)  # every segment its own colour
    assert not labels[~mask].any() and labels[mask].all()  # the ROI: labels inside, 0 outside
    assert scribble_agreement(labels, first_strokes, names) > 0.75

    # Refine after erasing every second grey-matter stroke voxel (no new segment): the saved model
    # carries the first fit's features, so only the clustering head retrains
    fewer = first_strokes.copy()
    fewer[tuple(np.argwhere(fewer == 1)[::2].T)] = 0
    refined_scribbles, refined_output = tmp_path / "scribbles.nrrd", tmp_path / "refined.seg.nrrd"
    write_slicer_nrrd(refined_scribbles, fewer, volume.affine)
    command = build_command(
        files.input,
        refined_scribbles,
        refined_output,
        params.for_refine(),
        model_in=files.model,
        model_out=tmp_path / "refined.pt",
        mask_path=files.mask,
        class_names=names,
    )
    monitor, fractions, returncode = run_like_the_module(command)
    assert monitor.outcome(returncode)[0], monitor.log[-5:]
    fit = [e for e in monitor.events if e["stage"] == "fit"]
    assert {e["phase"] for e in fit} == {"head"} and fit[-1]["max_iter"] == params.refine_iter
    assert fractions == sorted(fractions) and (tmp_path / "refined.pt").is_file()
    segmentation, shown = module_segments(refined_output, names, colors)
    assert [s["name"] for s in shown[:2]] == list(names.values())
    assert scribble_agreement(segmentation["voxels"], fewer, names) > 0.75


def test_engine_errors_reach_the_module_as_one_line(slicer_inputs, tmp_path):
    files, volume, _, _ = slicer_inputs
    other_grid = tmp_path / "scribbles.nrrd"
    finer = volume.affine.copy()
    finer[:3, :3] /= 2  # scribbles exported on a 2 mm grid instead of the volume's 4 mm grid
    write_slicer_nrrd(other_grid, np.ones(tuple(2 * n for n in volume.spatial_shape), np.int16), finer)
    command = build_command(files.input, other_grid, tmp_path / "out.seg.nrrd", RunParameters(max_iter=2, device="cpu"))
    monitor, _, returncode = run_like_the_module(command)
    ok, message = monitor.outcome(returncode)
    assert not ok and returncode != 0
    assert message.startswith(str(other_grid)) and "\n" not in message
    assert not (tmp_path / "out.seg.nrrd").exists()

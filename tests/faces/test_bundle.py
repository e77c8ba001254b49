"""The MONAI bundle (monai_bundle/), run as a user runs it: `python -m monai.bundle run ...` and torchrun.

Data: three small real volumes cut from the bundled MNI152 sample (two interleaved 4 mm grids with
brain masks, one with scribbles; a 4 mm slab without mask) plus a truncated NIfTI in the same folder.
"""

import gzip
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from unsupervised_seg import InputError, SegmentationConfig, Segmenter, Volume, segment
from unsupervised_seg.demo.metrics import hungarian_dice
from unsupervised_seg.demo.sample import SAMPLE_MASK, SAMPLE_T1, SAMPLE_TISSUES

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "monai_bundle" / "configs"
INFERENCE = str(CONFIGS / "inference.json")
MULTI_GPU = str(CONFIGS / "multi_gpu_inference.json")
TRAIN = str(CONFIGS / "train.json")
MAX_ITER = 10
IMAGES = ("mni_a", "mni_b", "mni_slab")
BUNDLE_THREADS = 1  # the bundle's processes run with this many threads


def _env():
    env = dict(os.environ, OMP_NUM_THREADS=str(BUNDLE_THREADS), PYTHONWARNINGS="ignore")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run_bundle(*args, nproc=None, status=1):
    """Run the bundle in a subprocess from the repository root; return its combined output. ``status``: the exit
    status expected, 1 by default because the dataset holds a corrupt file (skipped: see test_bundle_exit.py)."""
    if nproc:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nnodes=1",
            f"--nproc_per_node={nproc}",
            "-m",
            "monai.bundle",
            "run",
        ]
    else:
        launcher = [sys.executable, "-m", "monai.bundle", "run"]
    proc = subprocess.run(
        launcher + [str(a) for a in args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == status, output[-4000:]
    return output


def _save(array, affine, path):
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array), affine), str(path))


def _load_volume(path):
    """The engine's view of a NIfTI: (1, *spatial) float32 in nibabel order, spacing from the header."""
    img = nib.load(str(path))
    return Volume(
        img.get_fdata(dtype=np.float32)[None],
        tuple(float(z) for z in img.header.get_zooms()[:3]),
        img.affine,
        source=str(path),
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Folder with 3 volumes (+ masks, + scribbles for mni_b) and a corrupt file; truth and masks by name."""
    folder = tmp_path_factory.mktemp("bundle_in")
    t1_img = nib.load(str(SAMPLE_T1))
    t1, mask = np.asarray(t1_img.dataobj), np.asarray(nib.load(str(SAMPLE_MASK)).dataobj) > 0
    tissues = np.asarray(nib.load(str(SAMPLE_TISSUES)).dataobj).astype(np.uint8)
    truth, masks = {}, {}
    for name, offset in (("mni_a", 0), ("mni_b", 1)):
        sub = (slice(offset, None, 2),) * 3
        affine = t1_img.affine.copy()
        affine[:3, 3] += affine[:3, :3] @ np.full(3, offset)
        affine[:3, :3] *= 2
        _save(t1[sub], affine, folder / f"{name}.nii.gz")
        _save(mask[sub].astype(np.uint8), affine, folder / f"{name}_mask.nii.gz")
        truth[name], masks[name] = tissues[sub], mask[sub]
    # scribbles for mni_b: 3 % of the voxels of each tissue, in an order unlike intensity order so that the
    # labels can only follow it through the scribbles: class 1 = white matter, 2 = CSF, 3 = grey matter
    rng = np.random.default_rng(0)
    tissue_to_class = np.array([0, 2, 3, 1], np.uint8)
    picked = rng.random(truth["mni_b"].shape) < 0.03
    scribbles = np.where(picked, tissue_to_class[truth["mni_b"]], 0).astype(np.uint8)
    truth["mni_b_classes"] = tissue_to_class[truth["mni_b"]]
    _save(scribbles, nib.load(str(folder / "mni_b.nii.gz")).affine, folder / "mni_b_scribbles.nii.gz")
    # a 4 mm axial slab without a mask (whole image is the ROI)
    slab = (slice(None, None, 2), slice(None, None, 2), slice(40, 56, 2))
    affine = t1_img.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.array([0, 0, 40])
    affine[:3, :3] *= 2
    _save(t1[slab], affine, folder / "mni_slab.nii.gz")
    # a truncated file: header intact, voxel data cut off
    raw = gzip.decompress((folder / "mni_a.nii.gz").read_bytes())
    (folder / "broken.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 3]))
    return {"dir": folder, "truth": truth, "masks": masks, "scribbles": {"mni_b": scribbles}}


@pytest.fixture(scope="module")
def single_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle_out")
    log = run_bundle(
        "--config_file",
        INFERENCE,
        "--dataset_dir",
        dataset["dir"],
        "--output_dir",
        out,
        "--max_iter",
        MAX_ITER,
        "--device",
        "cpu",
    )
    return out, log


def _labels(path):
    return np.asarray(nib.load(str(path)).dataobj)


def _per_volume_log_lines(log):
    """{image path: number of 'N labels, M iterations' lines} from the inferer's log."""
    counts = {}
    for match in re.finditer(r"(\S+\.nii\.gz): \d+ labels, \d+ iterations", log):
        counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def test_inference_writes_engine_labels_on_input_grid(dataset, single_run):
    out, log = single_run
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"{name}_seg.nii.gz" for name in IMAGES]  # no temp files, nothing for broken.nii.gz
    config = SegmentationConfig(max_iter=MAX_ITER, device="cpu")
    masks_with_truth = ("mni_a", "mni_b")
    for name in IMAGES:
        source = dataset["dir"] / f"{name}.nii.gz"
        result_img, source_img = nib.load(str(out / f"{name}_seg.nii.gz")), nib.load(str(source))
        assert result_img.shape == source_img.shape
        np.testing.assert_allclose(result_img.affine, source_img.affine, atol=1e-6)
        assert np.issubdtype(result_img.get_data_dtype(), np.unsignedinteger)
        labels = _labels(out / f"{name}_seg.nii.gz")
        mask = dataset["masks"].get(name)
        if name in masks_with_truth:  # the bundle is the engine: same seed, same labels (one run with scribbles)
            # with the bundle's thread count: another thread count sums floats in another order, a few argmax ties
            # flip, and a flipped voxel may send a stray cluster (< min_cluster_fraction of the ROI, between two
            # tissues) to the other tissue (1 thread against 2: up to 0.04 % of mni_b's voxels)
            threads = torch.get_num_threads()
            torch.set_num_threads(BUNDLE_THREADS)
            try:
                expected = segment(_load_volume(source), dataset["scribbles"].get(name), mask, config).labels
            finally:
                torch.set_num_threads(threads)
            tolerance = 1e-4 + config.min_cluster_fraction * mask.mean()
            assert np.mean(labels != expected) <= tolerance, np.argwhere(labels != expected)[:10]
            dice = hungarian_dice(labels, dataset["truth"][name], mask)["mean"]
            assert dice > 0.7, (name, dice)
            assert (labels[~mask] == 0).all()


def test_scribble_classes_become_labels(dataset, single_run):
    out, _ = single_run
    labels = _labels(out / "mni_b_seg.nii.gz")
    scribbles, mask = dataset["scribbles"]["mni_b"], dataset["masks"]["mni_b"]
    truth = dataset["truth"]["mni_b_classes"]
    scribbled = scribbles > 0
    assert np.mean(labels[scribbled] == scribbles[scribbled]) > 0.8
    for k in (1, 2, 3):  # label k is scribble class k without any matching
        a, b = labels[mask] == k, truth[mask] == k
        assert 2 * np.sum(a & b) / (a.sum() + b.sum()) > 0.5, k


def test_corrupt_file_is_reported_and_skipped(dataset, single_run):
    _, log = single_run
    assert re.search(r"ERROR - skipped \S*broken\.nii\.gz: cannot read NIfTI", log), log[-3000:]
    counts = _per_volume_log_lines(log)
    assert counts == {str(dataset["dir"] / f"{name}.nii.gz"): 1 for name in IMAGES}


def test_torchrun_two_cpu_processes_match_single_process(dataset, single_run, tmp_path):
    single_out, _ = single_run
    out = tmp_path / "out"
    log = run_bundle(
        "--config_file",
        f"['{INFERENCE}','{MULTI_GPU}']",
        "--dataset_dir",
        dataset["dir"],
        "--output_dir",
        out,
        "--max_iter",
        MAX_ITER,
        nproc=2,
    )
    # every image exactly once over both ranks; 3 images over 2 ranks: 2 + 1 (no padding duplicate)
    ranks = re.findall(r"\[rank (\d)/2\] (\S+\.nii\.gz): \d+ labels", log)
    assert sorted(path for _, path in ranks) == [str(dataset["dir"] / f"{n}.nii.gz") for n in IMAGES]
    assert sorted(rank for rank, _ in ranks) == ["0", "0", "1"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single_out.iterdir())
    for name in IMAGES:
        np.testing.assert_array_equal(_labels(out / f"{name}_seg.nii.gz"), _labels(single_out / f"{name}_seg.nii.gz"))


def test_reference_mode_trains_then_predicts_without_optimisation(dataset, tmp_path, monkeypatch):
    import torch
    from monai.bundle import run

    model = tmp_path / "models" / "model.pt"
    run_bundle(
        "--config_file",
        TRAIN,
        "--dataset_dir",
        dataset["dir"],
        "--model_path",
        model,
        "--max_iter",
        2,
        "--device",
        "cpu",
    )
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    steps = []
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: steps.append(1))
    monkeypatch.setattr(Segmenter, "fit", lambda *a, **k: pytest.fail("fit called in reference mode"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="1"):  # the corrupt file was skipped
        run(
            config_file=INFERENCE,
            logging_file=False,
            dataset_dir=str(dataset["dir"]),
            output_dir=str(out),
            model_path=str(model),
            device="cpu",
        )
    assert steps == []
    assert hashlib.sha256(model.read_bytes()).hexdigest() == digest
    for name in IMAGES:
        expected = (
            Segmenter.load(model)
            .predict(_load_volume(dataset["dir"] / f"{name}.nii.gz"), dataset["masks"].get(name))
            .labels
        )
        np.testing.assert_array_equal(_labels(out / f"{name}_seg.nii.gz"), expected)


def test_every_engine_parameter_is_a_command_line_override():
    from monai.bundle import ConfigParser

    names = [f.name for f in fields(SegmentationConfig)]
    for path in (INFERENCE, TRAIN):
        parser = ConfigParser()
        parser.read_config(path)
        for name in names:
            assert parser[name] == f"$@engine_defaults.{name}", (path, name)
            assert parser["segmentation_config"][name] == f"@{name}", (path, name)
        assert parser.get_parsed_content("segmentation_config") == SegmentationConfig()
        parser.update({"min_labels": 4, "device": "cpu", "patch_size": [8, 8, 8], "n_labels": 3})
        parser.parse()
        config = parser.get_parsed_content("segmentation_config")
        assert config == SegmentationConfig(min_labels=4, device="cpu", patch_size=(8, 8, 8), n_labels=3)
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update({"seed": 7, "model_path": "m.pt"})
    inferer = parser.get_parsed_content("inferer")
    assert inferer.config.seed == 7 and inferer.model_path == "m.pt"


def test_metadata_fields_and_versions():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    required = [
        "version",
        "changelog",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "data_source",
        "data_type",
        "intended_use",
        "references",
        "network_data_format",
    ]
    assert not [key for key in required if not meta.get(key)]
    assert meta["version"] in meta["changelog"]

    def major(version):
        return version.split(".")[0]

    installed = {"monai_version": "monai", "pytorch_version": "torch", "numpy_version": "numpy"}
    for key, package in installed.items():
        assert major(meta[key]) == major(importlib.metadata.version(package)), key
    assert "unsupervised-seg" in meta["required_packages_version"]
    for package, version in meta["required_packages_version"].items():
        assert major(version) == major(importlib.metadata.version(package)), package
    tensor_keys = {
        "type",
        "format",
        "modality",
        "num_channels",
        "spatial_shape",
        "dtype",
        "value_range",
        "is_patch_data",
        "channel_def",
    }
    data_format = meta["network_data_format"]
    assert tensor_keys <= set(data_format["inputs"]["image"])
    assert tensor_keys - {"modality"} <= set(data_format["outputs"]["pred"])
    # the declared output channels are the engine's default number of clusters in 3D
    assert data_format["outputs"]["pred"]["num_channels"] == SegmentationConfig().resolved(3).n_clusters


def test_verify_net_in_out():
    from monai.bundle import verify_net_in_out

    args = dict(
        net_id="network_def", meta_file=str(CONFIGS / "metadata.json"), config_file=INFERENCE, device="cpu", any=8
    )
    verify_net_in_out(**args)  # random (1, 1, 8, 8, 8) input: output channels and dtype as metadata.json says
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out(**args, n_clusters=16)


def test_datalist_finds_companions_and_rejects_empty_folders(tmp_path):
    from unsupervised_seg.bundle import nifti_datalist

    for name in (
        "b.nii.gz",
        "b_scribbles.nii.gz",
        "b_mask.nii",
        "a.nii",
        "a_seg.nii.gz",
        "a_labels.nii.gz",
        "notes.txt",
    ):
        (tmp_path / name).write_bytes(b"")
    assert nifti_datalist(tmp_path) == [
        {"image": str(tmp_path / "a.nii")},
        {
            "image": str(tmp_path / "b.nii.gz"),
            "scribbles": str(tmp_path / "b_scribbles.nii.gz"),
            "mask": str(tmp_path / "b_mask.nii"),
        },
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no NIfTI images"):
        nifti_datalist(empty)


def test_invalid_companions_are_skipped_with_their_name(mni_4mm, tmp_path):
    from unsupervised_seg.bundle import ValidatedDataset

    volume, mask, _ = mni_4mm
    _save(volume.data[0], volume.affine, tmp_path / "good.nii.gz")
    _save(volume.data[0], volume.affine, tmp_path / "bad.nii.gz")
    _save(np.zeros(volume.spatial_shape, np.uint8), volume.affine, tmp_path / "bad_mask.nii.gz")
    _save(np.ones((4, 4, 4)), np.eye(4), tmp_path / "flat.nii.gz")
    items = [
        {"image": str(tmp_path / "good.nii.gz")},
        {"image": str(tmp_path / "bad.nii.gz"), "mask": str(tmp_path / "bad_mask.nii.gz")},
        {"image": str(tmp_path / "flat.nii.gz")},
    ]
    dataset = ValidatedDataset(items)
    assert [item["image"] for item in dataset.data] == [str(tmp_path / "good.nii.gz")]
    assert [(Path(p).name, "empty" in m or "constant" in m) for p, m in dataset.skipped] == [
        ("bad_mask.nii.gz", True),
        ("flat.nii.gz", True),
    ]
    with pytest.raises(InputError, match="none of the 2 images"):
        ValidatedDataset(items[1:])


def test_inferer_segments_each_batch_item_under_no_grad(mni_4mm):
    import torch
    from monai.data import MetaTensor

    from unsupervised_seg.bundle import TestTimeClusteringInferer

    volume, mask, _ = mni_4mm
    crops = [(slice(4, 20), slice(6, 26), slice(6, 22)), (slice(5, 21), slice(7, 27), slice(7, 23))]
    images = np.stack([volume.data[(slice(None),) + c] for c in crops]).astype(np.float32)  # (2, 1, 16, 20, 16)
    masks = np.stack([mask[c][None] for c in crops]).astype(np.float32)
    affine = volume.affine.copy()
    inputs = MetaTensor(torch.from_numpy(images), meta={"filename_or_obj": ["a.nii.gz", "b.nii.gz"]})
    inputs.affine = torch.from_numpy(np.stack([affine, affine]))
    inputs.is_batch = True
    config = SegmentationConfig(max_iter=3, device="cpu")
    with torch.no_grad():  # as SupervisedEvaluator calls it
        labels = TestTimeClusteringInferer(config)(inputs, None, mask=torch.from_numpy(masks))
    assert labels.shape == (2, 1, 16, 20, 16)
    assert labels.meta["filename_or_obj"] == ["a.nii.gz", "b.nii.gz"]
    for b in range(2):
        expected = segment(Volume(images[b], volume.spacing, affine), mask=masks[b, 0] > 0, config=config).labels
        np.testing.assert_array_equal(labels[b, 0].numpy(), expected)

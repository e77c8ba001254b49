"""The command line end to end: subprocess runs on a crop of the bundled MNI152 sample, bad inputs, batches."""

import hashlib
import json
import os
import sys

import nibabel as nib
import numpy as np
import pytest
import slicerio

from unsupervised_seg.cli import main
from unsupervised_seg.cli.reporter import Reporter

ITER = ["--max-iter", "4"]


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("unsupervised-seg: error:")]


def digest(folder):
    """{name: sha256} of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def crop(mni_4mm):
    """(T1 (32, 36, 32) float, tissue labels, affine): the brain's centre at 4 mm, small enough for seconds."""
    volume, _, tissues = mni_4mm
    box = (slice(9, 41), slice(12, 48), slice(10, 42))
    affine = volume.affine.copy()
    affine[:3, 3] = (affine @ np.r_[9, 12, 10, 1.0])[:3]
    return volume.data[0][box].astype(np.float32), tissues[box], affine


def write_nifti(path, array, affine, dtype=np.int16):
    image = nib.Nifti1Image(np.asarray(array).astype(dtype), affine)
    image.header.set_sform(affine, code=2)  # "aligned": must survive into the output
    nib.save(image, path)
    return path


def tissue_scribbles(tissues):
    """Scribbles from the tissue labels on every 8th axial slice (a few strokes per class)."""
    scribbles = np.zeros_like(tissues)
    scribbles[:, :, ::8] = tissues[:, :, ::8]
    return scribbles


@pytest.fixture()
def inputs(tmp_path, crop):
    """Folder with the crop as t1.nii.gz; returns (folder, image path)."""
    folder = tmp_path / "in"
    folder.mkdir()
    return folder, write_nifti(folder / "t1.nii.gz", crop[0] * 100, crop[2])


def test_segment_subprocess_writes_labels_on_the_input_grid_with_json_progress(cli, inputs, tmp_path):
    folder, image = inputs
    before = digest(folder)
    out = tmp_path / "out" / "result.nii.gz"
    proc = cli.run("segment", image, "-o", out, *ITER, "--progress", "json")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]  # every stdout line is one JSON object
    fits = [e for e in events if e["stage"] == "fit"]
    assert [e["iteration"] for e in fits] == [1, 2, 3, 4]
    assert all({"n_labels", "loss", "max_iter"} <= e.keys() for e in fits)
    assert events[-1]["stage"] == "written" and events[-1]["path"] == str(out)
    written, source = nib.load(out), nib.load(image)
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    assert written.header.get_sform(coded=True)[1] == 2
    labels = np.asarray(written.dataobj)
    assert len(np.unique(labels[labels > 0])) == events[-1]["n_labels"]
    data = np.asarray(source.dataobj)
    assert (labels[data > 0] > 0).mean() > 0.99 and (labels[data == 0] == 0).mean() > 0.9  # no mask: the brain
    assert digest(folder) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["result.nii.gz"]  # no temporary files left


def test_segment_subprocess_seg_nrrd_names_segments_after_the_scribbles(cli, inputs, tmp_path, crop):
    folder, image = inputs
    seg = slicerio.create_segmentation(crop[1].shape, np.diag([-1.0, -1.0, 1.0, 1.0]) @ crop[2])
    scribbles = tissue_scribbles(crop[1])
    for value, name in [(1, "CSF"), (2, "grey matter"), (3, "white matter")]:
        slicerio.add_segment(seg, scribbles == value, {"name": name, "color": [0.1 * value, 0.5, 0.5]})
    scribble_path = folder / "t1_scribbles.seg.nrrd"  # found beside the image by the naming rule
    slicerio.write_segmentation(str(scribble_path), seg)
    out = tmp_path / "t1_labels.seg.nrrd"
    proc = cli.run("segment", image, "-o", out, *ITER, "--progress", "json")
    assert proc.returncode == 0, proc.stderr
    written = json.loads(proc.stdout.splitlines()[-1])
    assert written["scribbles"] == str(scribble_path)
    result = slicerio.read_segmentation(str(out))
    names = {s["labelValue"]: s["name"] for s in result["segments"]}
    assert [names[k] for k in (1, 2, 3)] == ["CSF", "grey matter", "white matter"]
    assert all(name.startswith("Cluster ") for k, name in names.items() if k > 3)
    assert result["voxels"].shape == crop[1].shape


def test_batch_with_one_corrupt_file_writes_the_others_and_exits_nonzero(cli, inputs, tmp_path, crop):
    folder, image = inputs
    write_nifti(folder / "t2.nii.gz", crop[0][::-1] * 50, crop[2])
    write_nifti(folder / "t1_scribbles.nii.gz", tissue_scribbles(crop[1]), crop[2], np.uint8)
    data = image.read_bytes()
    (folder / "broken.nii.gz").write_bytes(data[: len(data) // 3])
    before = digest(folder)
    out = tmp_path / "results"
    proc = cli.run("segment", folder, "-o", out, *ITER, "--progress", "json")
    assert proc.returncode == 1
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and str(folder / "broken.nii.gz") in errors[0] and "truncated" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["t1_labels.nii.gz", "t2_labels.nii.gz"]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["path"] for e in events if e["stage"] == "error"] == [str(folder / "broken.nii.gz")]
    scribbled = {e["input"]: e.get("scribbles") for e in events if e["stage"] == "written"}
    assert scribbled == {
        str(folder / "t1.nii.gz"): str(folder / "t1_scribbles.nii.gz"),
        str(folder / "t2.nii.gz"): None,
    }
    assert digest(folder) == before


def test_demo_subprocess_writes_labels_overlay_and_dice(cli, tmp_path):
    from PIL import Image

    from unsupervised_seg.demo.sample import SAMPLE_T1

    proc = cli.run("demo", "-o", tmp_path / "demo")  # the real demo at its defaults (~20 s on 2 cores)
    assert proc.returncode == 0, proc.stderr
    labels_path, overlay_path = (
        tmp_path / "demo" / "mni152_t1_2mm_labels.nii.gz",
        tmp_path / "demo" / "mni152_t1_2mm_overlay.png",
    )
    assert str(labels_path) in proc.stdout and str(overlay_path) in proc.stdout
    dice_line = [line for line in proc.stdout.splitlines() if line.startswith("Dice")]
    assert len(dice_line) == 1 and "grey matter" in dice_line[0]
    assert float(dice_line[0].split("mean ")[1].split()[0]) >= 0.85, dice_line  # one-to-one, 3 labels
    labels, sample = nib.load(labels_path), nib.load(SAMPLE_T1)
    assert labels.shape == sample.shape and np.allclose(labels.affine, sample.affine)
    assert set(np.unique(np.asarray(labels.dataobj))) == {0, 1, 2, 3}
    overlay = Image.open(overlay_path)
    assert overlay.mode == "RGB" and overlay.width > 2 * overlay.height  # three planes side by side
    again = cli.run("demo", "-o", tmp_path / "demo", "--max-iter", "2")
    assert again.returncode == 1 and "--overwrite" in again.stderr


def _bad_cases(folder, image, tmp_path):
    """{case: (argv, the path the message must name)} for each kind of bad input."""
    data = image.read_bytes()
    truncated = folder / "truncated.nii.gz"
    truncated.write_bytes(data[: len(data) - 200])
    text = folder / "notes.txt"
    text.write_text("not an image\n")
    other_grid = folder / "other_scribbles.nii.gz"
    write_nifti(other_grid, np.ones((20, 20, 20)), np.diag([3.0, 3.0, 3.0, 1.0]), np.uint8)
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    missing = folder / "missing.nii.gz"
    out = tmp_path / "out" / "labels.nii.gz"
    return {
        "missing": (["segment", missing, "-o", out], missing),
        "truncated": (["segment", truncated, "-o", out], truncated),
        "not_an_image": (["segment", text, "-o", out], text),
        "scribbles_on_another_grid": (["segment", image, "--scribbles", other_grid, "-o", out], other_grid),
        "output_folder_blocked": (["segment", image, "-o", in_the_way / "labels.nii.gz"], in_the_way),
        "unknown_output_extension": (["segment", image, "-o", tmp_path / "labels.xyz"], tmp_path / "labels.xyz"),
    }


# (case, words of the problem the one-line message must state)
BAD_CASES = [
    ("missing", "no such file"),
    ("truncated", "truncated"),
    ("not_an_image", "not a supported image file"),
    ("scribbles_on_another_grid", "another grid"),
    ("output_folder_blocked", "a file of that name is in the way"),
    ("unknown_output_extension", ".xyz"),
]


@pytest.mark.parametrize("case, problem", BAD_CASES, ids=[case for case, _ in BAD_CASES])
def test_each_bad_input_gives_one_line_naming_the_file_and_exit_1(case, problem, inputs, tmp_path, capsys):
    folder, image = inputs
    argv, named = _bad_cases(folder, image, tmp_path)[case]
    before = digest(folder)
    code = main([str(a) for a in argv] + ITER + ["--progress", "none"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 1
    assert len(lines) == 1 and str(named) in lines[0] and problem in lines[0], lines
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert digest(folder) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_output_folder_is_reported(inputs, tmp_path, capsys):
    folder, image = inputs
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["segment", str(image), "-o", str(locked / "x.nii.gz"), *ITER]) == 1
        assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_existing_output_needs_overwrite_and_inputs_are_never_written_over(inputs, tmp_path, capsys):
    folder, image = inputs
    out = tmp_path / "labels.nii.gz"
    out.write_bytes(b"previous result")
    assert main(["segment", str(image), "-o", str(out), *ITER]) == 1
    assert "use --overwrite" in capsys.readouterr().err and out.read_bytes() == b"previous result"
    before = digest(folder)
    assert main(["segment", str(image), "-o", str(image), "--overwrite", *ITER]) == 1
    assert "replace an input" in capsys.readouterr().err and digest(folder) == before
    assert main(["segment", str(image), "-o", str(out), "--overwrite", *ITER]) == 0
    assert nib.load(out).shape == nib.load(image).shape


def test_train_then_segment_with_model_predicts_without_fitting(inputs, tmp_path, crop, capsys):
    folder, image = inputs
    second = write_nifti(folder / "t1_flipped.nii.gz", crop[0][:, ::-1] * 100, crop[2])
    model = tmp_path / "model.pt"
    assert main(["train", str(image), str(second), "-o", str(model), "--max-iter", "3", "--clusters", "8"]) == 0
    assert str(model) in capsys.readouterr().out
    out = tmp_path / "predicted.nii.gz"
    assert main(["segment", str(image), "-o", str(out), "--model", str(model), "--progress", "json"]) == 0
    written = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert written["stop_reason"] == "predict" and written["iterations"] == 0
    assert nib.load(out).shape == crop[0].shape
    assert (
        main(["segment", str(image), "-o", str(tmp_path / "x.nii.gz"), "--model", str(model), "--clusters", "4"]) == 1
    )
    assert "fixed by the saved model" in capsys.readouterr().err


def test_save_model_then_warm_start_from_it(inputs, tmp_path, capsys):
    from unsupervised_seg import Segmenter

    folder, image = inputs
    model = tmp_path / "fit.pt"
    assert main(["segment", str(image), "-o", str(tmp_path / "a.nii.gz"), "--save-model", str(model), *ITER]) == 0
    assert Segmenter.load(model).iterations_done == 4
    refined = tmp_path / "refined.pt"
    assert (
        main(
            [
                "segment",
                str(image),
                "-o",
                str(tmp_path / "b.nii.gz"),
                "--init-model",
                str(model),
                "--save-model",
                str(refined),
                "--max-iter",
                "2",
            ]
        )
        == 0
    )
    assert Segmenter.load(refined).iterations_done == 6  # continued from the saved fit
    capsys.readouterr()


def test_sequence_4d_nifti_gives_4d_labels_on_the_same_grid(crop, tmp_path, capsys):
    small = crop[0][8:24, 10:26, 8:24]
    series = np.stack([small, small * 1.05, np.roll(small, 1, axis=0)], axis=-1) * 100
    path = write_nifti(tmp_path / "series.nii.gz", series, crop[2], np.float32)
    out = tmp_path / "series_labels.nii.gz"
    code = main(
        [
            "segment",
            "--sequence",
            str(path),
            "-o",
            str(out),
            "--max-iter",
            "3",
            "--warm-max-iter",
            "2",
            "--progress",
            "json",
        ]
    )
    assert code == 0, capsys.readouterr().err
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["frame"] for e in events if e["stage"] == "done"] == [0, 1, 2]
    written = nib.load(out)
    assert written.shape == series.shape and np.allclose(written.affine, crop[2])


def test_png_photo_with_reference_code_scribbles(tmp_path, capsys):
    from PIL import Image
    from skimage import data

    photo = data.astronaut()[::8, ::8]  # (64, 64, 3)
    image = tmp_path / "astronaut.png"
    Image.fromarray(photo).save(image)
    scribbles = np.full(photo.shape[:2], 255, np.uint8)
    scribbles[5:8, 5:30] = 0
    scribbles[50:53, 20:40] = 1
    Image.fromarray(scribbles).save(tmp_path / "strokes.png")
    code = main(
        [
            "segment",
            str(image),
            "--scribbles",
            str(tmp_path / "strokes.png"),
            "--reference-scribbles",
            "-o",
            str(tmp_path / "out") + "/",
            "--max-iter",
            "3",
            "--progress",
            "none",
        ]
    )
    assert code == 0, capsys.readouterr().err
    labels = np.asarray(Image.open(tmp_path / "out" / "astronaut_labels.png"))
    assert labels.shape == (64, 64) and labels.min() >= 1


def test_overlay_png_beside_the_2d_labels_tints_the_photo(tmp_path, capsys):
    """``--overlay`` writes <output stem>_overlay.png: the photo's size, its pixels tinted by label (a label PNG
    alone is hard to read); an existing overlay is not replaced without --overwrite."""
    from PIL import Image
    from skimage import data

    photo = data.astronaut()[::8, ::8]  # (64, 64, 3)
    image = tmp_path / "astronaut.png"
    Image.fromarray(photo).save(image)
    out = tmp_path / "seg.png"
    args = ["segment", str(image), "-o", str(out), "--overlay", "--max-iter", "3", "--progress", "none"]
    assert main(args) == 0, capsys.readouterr().err
    overlay = np.asarray(Image.open(tmp_path / "seg_overlay.png").convert("RGB"))
    labels = np.asarray(Image.open(out))
    assert labels.shape == photo.shape[:2] and overlay.shape[0] == overlay.shape[1] >= 64  # enlarged, same aspect
    plain = np.asarray(Image.fromarray(photo).resize(overlay.shape[1::-1], Image.NEAREST), np.float32)
    assert np.abs(overlay - plain).mean() > 10  # tinted, not the photo copied
    assert main(args) == 1 and "exists" in capsys.readouterr().err


def test_progress_bar_only_on_a_terminal_outside_ci(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert Reporter("bar").use_bar
    monkeypatch.setenv("CI", "true")
    assert not Reporter("bar").use_bar
    monkeypatch.delenv("CI")
    assert not Reporter("none").use_bar and not Reporter("json").use_bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not Reporter("bar").use_bar


def test_sequence_folder_of_frames_gives_one_label_file_per_frame(tmp_path, capsys):
    from PIL import Image
    from skimage import data

    frames = tmp_path / "frames"
    frames.mkdir()
    camera = data.camera()[::8, ::8]  # (64, 64)
    for t in range(3):
        Image.fromarray(np.roll(camera, 2 * t, axis=1)).save(frames / f"frame{t:02d}.png")
    out = tmp_path / "out"
    assert main(["segment", "--sequence", str(frames), "-o", str(out), "--max-iter", "3", "--progress", "none"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"frame{t:02d}_labels.png" for t in range(3)]
    assert np.asarray(Image.open(out / "frame02_labels.png")).shape == (64, 64)
    capsys.readouterr()

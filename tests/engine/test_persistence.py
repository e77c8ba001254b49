"""Model files are data, never code: versioned tensors and plain values read with weights_only=True."""

import pickle

import numpy as np
import pytest
import torch

from unsupervised_seg import InputError, Segmenter
from unsupervised_seg.engine import persistence


class _RunsACommand:
    """A pickle payload: unpickling it calls os.system, as a crafted 'model' from a download would."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def fitted(mni_4mm):
    volume, mask, _ = mni_4mm
    segmenter = Segmenter(max_iter=5, n_labels=3)
    segmenter.fit(volume, mask=mask)
    return segmenter, volume, mask


def test_crafted_pickle_runs_nothing_and_says_why(tmp_path):
    marker = tmp_path / "was_run"
    path = tmp_path / "model.pt"
    torch.save({"format": persistence.FORMAT, "version": persistence.VERSION, "config": _RunsACommand(marker)}, path)
    with open(tmp_path / "plain.pkl", "wb") as handle:  # and a plain pickle, not even a torch file
        pickle.dump(_RunsACommand(marker), handle)
    for bad in (path, tmp_path / "plain.pkl"):
        with pytest.raises(InputError, match="refused: the file holds Python objects") as info:
            Segmenter.load(bad)
        assert str(bad) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, problem",
    [
        ({"state_dict": {}}, "no format tag"),
        ({"format": persistence.FORMAT, "version": 99}, "version 99 is not supported"),
        ([1, 2, 3], "no format tag"),
    ],
    ids=["untagged", "future-version", "not-a-dict"],
)
def test_foreign_or_newer_files_get_one_clear_error(tmp_path, content, problem):
    path = tmp_path / "model.pt"
    torch.save(content, path)
    with pytest.raises(InputError, match=problem):
        Segmenter.load(path)


def test_truncated_file_is_named(tmp_path, fitted):
    path = tmp_path / "model.pt"
    fitted[0].save(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(InputError, match="not a saved UnsupervisedSeg model") as info:
        Segmenter.load(path)
    assert str(path) in str(info.value)


def test_a_model_saved_on_a_gpu_loads_where_there_is_none(tmp_path, fitted):
    """A model trained with --device cuda loads on a machine without CUDA (on the CPU, same labels); a --device
    this machine lacks, asked for explicitly, gets the device error, not 'damaged model'."""
    segmenter, volume, mask = fitted
    path = tmp_path / "model.pt"
    state = persistence.segmenter_state(segmenter)
    state["config"]["device"] = "cuda:7"  # a GPU this machine does not have (none here, or fewer than 8)
    persistence.write_state(state, path)
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    loaded = Segmenter.load(path)
    assert loaded.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    np.testing.assert_array_equal(loaded.predict(volume, mask).labels, segmenter.predict(volume, mask).labels)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available") as info:
            Segmenter.load(path, device="cuda")
        assert "damaged" not in str(info.value)


def test_saved_state_is_tensors_and_plain_values(tmp_path, fitted):
    segmenter, volume, mask = fitted
    path = tmp_path / "model.pt"
    segmenter.save(path)
    state = torch.load(path, weights_only=True)  # would raise on any other object
    assert state["format"] == persistence.FORMAT and state["version"] == persistence.VERSION
    loaded = Segmenter.load(path)
    np.testing.assert_array_equal(loaded.channel_to_label, segmenter.channel_to_label)
    assert loaded._cache is not None and loaded._cache.key == segmenter._cache.key
    np.testing.assert_array_equal(loaded.predict(volume, mask).labels, segmenter.predict(volume, mask).labels)


def test_a_failed_write_is_an_os_error_not_a_torch_traceback():
    """/dev/full refuses every write (ENOSPC), as a full disk does; torch's zip writer says RuntimeError."""
    from pathlib import Path

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with pytest.raises(OSError, match="disk full"):
        persistence.write_state({"weights": torch.zeros(100_000)}, "/dev/full")


def test_thick_slices_get_a_kernel_without_depth_that_survives_saving(tmp_path, chest_ct):
    ct, body = chest_ct  # 3 x 3 x 10 mm
    segmenter = Segmenter(max_iter=3, n_labels=3, device="cpu")
    segmenter.fit(ct, mask=body)
    assert segmenter.network.features[0].kernel_size == (3, 3, 1)
    segmenter.save(tmp_path / "model.pt")
    again = Segmenter.load(tmp_path / "model.pt")
    assert again.network.features[0].kernel_size == (3, 3, 1)
    assert np.array_equal(again.predict(ct, mask=body).labels, segmenter.predict(ct, mask=body).labels)


def test_a_file_with_the_former_head_start_loads_and_refines_the_head(tmp_path, fitted, mni_4mm):
    """Files of earlier 0.2 builds kept the network's head for strokes to restart from ("head_start"); strokes now
    go on from the saved head and the key is ignored."""
    from unsupervised_seg.demo.simulated_scribbles import scribbles_from_truth

    segmenter, volume, mask = fitted
    state = persistence.segmenter_state(segmenter)
    state["refine_cache"]["head_start"] = {"head": segmenter.network.head.state_dict(), "optimizer": {}}
    persistence.write_state(state, tmp_path / "old.pt")
    loaded = Segmenter.load(tmp_path / "old.pt")
    assert loaded._cache is not None
    result = loaded.fit(volume, scribbles_from_truth(mni_4mm[2], mask, volume.spacing), mask, max_iter=5)
    assert {entry["phase"] for entry in result.history} == {"head"}

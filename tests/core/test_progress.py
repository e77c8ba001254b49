"""core.progress: every event to a flat JSON-able dict and back (the CLI's --progress json lines, the Slicer
module's reader), unknown keys kept in ``extra``, unknown stages refused."""

import json

import pytest

from unsupervised_seg.core.progress import Done, Failed, FitStep, Predicting, ProgressEvent, Result, Written

EVENTS = [
    FitStep(
        iteration=3,
        max_iter=50,
        phase="network",
        n_labels=7,
        loss=1.25,
        similarity=0.75,
        continuity=0.5,
        changed=0.01,
        tolerance=0.005,
        fraction=0.2,
    ),
    FitStep(
        iteration=1,
        max_iter=10,
        phase="head",
        n_labels=3,
        loss=0.5,
        similarity=0.25,
        continuity=0.25,
        scribble=0.125,
        extra={"frame": 2},
    ),
    Predicting(patch_size=[64, 64, 48]),
    Done(iteration=40, n_labels=3, stop_reason="converged", extra={"input": "t1.nii.gz"}),
    Written(path="out/t1_labels.nii.gz", extra={"n_labels": 3, "seconds": 12.5, "scribbles": None}),
    Failed(path="broken.nii.gz", message="truncated file"),
    Result(extra={"dice": {"mean": 0.9}}),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: f"{type(e).__name__}")
def test_round_trip_through_a_json_line(event):
    line = json.dumps(event.to_dict())
    again = ProgressEvent.from_dict(json.loads(line))
    assert type(again) is type(event) and again == event


def test_to_dict_is_flat_with_the_stage_first_and_no_unset_fields():
    data = EVENTS[0].to_dict()
    assert list(data)[0] == "stage" and data["stage"] == "fit"
    assert data == {
        "stage": "fit",
        "iteration": 3,
        "max_iter": 50,
        "phase": "network",
        "n_labels": 7,
        "loss": 1.25,
        "similarity": 0.75,
        "continuity": 0.5,
        "scribble": 0.0,
        "changed": 0.01,
        "tolerance": 0.005,
        "fraction": 0.2,
    }
    assert "changed" not in EVENTS[1].to_dict() and EVENTS[1].to_dict()["frame"] == 2  # extra merged in
    assert Failed(path=None, message="x").to_dict() == {"stage": "error", "message": "x"}
    assert [e.to_dict()["stage"] for e in EVENTS[2:]] == ["predict", "done", "written", "error", "result"]


def test_an_error_without_a_file_round_trips():
    event = Failed(path=None, message="no inputs")
    assert ProgressEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event


def test_unknown_keys_are_kept_in_extra():
    """A newer writer's fields stay readable and are written back."""
    data = {"stage": "done", "iteration": 5, "n_labels": 2, "stop_reason": "max_iter", "frame": 1, "gpu": "H200"}
    event = ProgressEvent.from_dict(data)
    assert isinstance(event, Done) and event.iteration == 5 and event.stop_reason == "max_iter"
    assert event.extra == {"frame": 1, "gpu": "H200"}
    assert event.to_dict() == data


@pytest.mark.parametrize(
    "data",
    [{"stage": "training", "iteration": 1}, {"iteration": 1}, {"stage": None}],
    ids=["unknown_stage", "no_stage", "stage_none"],
)
def test_an_unknown_stage_raises(data):
    with pytest.raises(ValueError, match="unknown progress stage"):
        ProgressEvent.from_dict(data)


def test_a_known_stage_with_a_missing_field_raises():
    with pytest.raises(TypeError):
        ProgressEvent.from_dict({"stage": "written"})  # a Written event needs its path

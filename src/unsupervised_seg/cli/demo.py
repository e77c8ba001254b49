"""``unsupervised-seg demo``: segment the bundled MNI152 sample, write labels and an overlay, report Dice."""

from __future__ import annotations

from pathlib import Path

from ..api import check_output, summary
from ..core.progress import ProgressCallback, Result, Written
from ..demo.metrics import hungarian_dice
from ..demo.overlay import save_overlay
from ..demo.sample import SAMPLE_T1, TISSUE_NAMES, load_sample
from ..engine.config import SegmentationConfig
from ..engine.segmenter import segment
from ..io import save_labels
from ..io.atomic import ensure_folder
from ..io.paths import split_name


def run_demo(output, overwrite: bool, progress: ProgressCallback, **engine_options) -> int:
    """Segment the sample into 3 labels into folder ``output``; returns 0 (problems raise InputError)."""
    config = SegmentationConfig(**{**engine_options, "n_labels": 3})
    folder = ensure_folder(output)
    stem = split_name(SAMPLE_T1)[0]
    labels_path, overlay_path = folder / f"{stem}_labels.nii.gz", folder / f"{stem}_overlay.png"
    for path in (labels_path, overlay_path):
        check_output(path, {Path(SAMPLE_T1).resolve()}, overwrite)
    volume, mask, tissues = load_sample()

    def with_input(event):
        event.extra = {"input": str(SAMPLE_T1), **event.extra}
        progress(event)

    result = segment(volume, mask=mask, config=config, progress=with_input)
    dice = hungarian_dice(result.labels, tissues, mask)
    names = {cluster: TISSUE_NAMES[tissue] for tissue, cluster in dice["matching"].items() if tissue in TISSUE_NAMES}
    with_input(Written(str(save_labels(result.labels, volume, labels_path, class_names=names)), extra=summary(result)))
    with_input(Written(str(save_overlay(volume, result.labels, overlay_path))))
    per_class = {TISSUE_NAMES.get(k, str(k)): round(v, 4) for k, v in dice["per_class"].items() if k != 0}
    parts = ", ".join(f"{name} {value:.3f}" for name, value in per_class.items())
    text = f"Dice vs the template's tissue classes (one-to-one matching): mean {dice['mean']:.3f} ({parts})"
    progress(Result(extra={"text": text, "dice_mean": round(dice["mean"], 4), "dice": per_class}))
    return 0

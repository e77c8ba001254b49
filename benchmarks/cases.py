"""Benchmark cases built from real data: an image, its ROI, its ground truth, the mask the methods get and
optional scribbles. The volumes themselves come from benchmarks/devset.py (sources, truths, licences there).

Case names follow ``{volume}[_noisy][_{strokes}]``:
- ``volume``: a name of devset.VOLUMES, e.g. ``mni2mm`` (MNI152 template, brain mask given), ``mni2mm_nomask``
  (the bundled sample without its mask), ``colin2mm``, ``itkt1``, ``headct``, ``headct_padded``, ``chestct``,
  ``chestct_nomask``. The ROI (where Dice is counted) is always the truth's region; the methods get the
  volume's mask, or nothing for ``_nomask`` / ``_padded`` volumes.
- ``_noisy``: devset.noisy (MR: bias field and Rician noise; CT: Gaussian noise and an offset field), seeded;
  the truth is unchanged.
- ``_{strokes}``: simulated strokes made from the truth by unsupervised_seg.demo.simulated_scribbles on three
  slices across the last axis: ``_scribbles`` = thin centre lines (style "centreline"), ``_painted``,
  ``_imbalanced``, ``_sparse`` (the styles of the same name).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import devset  # noqa: E402
from devset import NOISE_SEED, add_scan_artefacts, bias_field, histogram_valleys  # noqa: E402,F401
from unsupervised_seg.demo.simulated_scribbles import scribbles_from_truth  # noqa: E402

NOISE_FRACTION, BIAS_RANGE = devset.MR_NOISE, devset.MR_BIAS
CLASS_NAMES = dict(devset.MR_NAMES)  # the brain cases' classes (every case carries its own: Case.class_names)
STROKES = {"scribbles": "centreline", "painted": "painted", "imbalanced": "imbalanced", "sparse": "sparse"}
_NAME = re.compile(
    r"^(?P<base>[a-z0-9]+(?:_nomask|_padded)?)(?P<noisy>_noisy)?(?:_(?P<strokes>" + "|".join(STROKES) + r"))?$"
)


@dataclass
class Case:
    """image (X, Y, Z) float32; roi (X, Y, Z) bool (where Dice is counted); truth (X, Y, Z) uint8 0..K;
    scribbles (X, Y, Z) int32 or None; mask (X, Y, Z) bool or None: what the methods get (None: no mask)."""

    name: str
    image: np.ndarray
    spacing: tuple
    affine: np.ndarray
    roi: np.ndarray
    truth: np.ndarray
    scribbles: Optional[np.ndarray]
    description: str
    mask: Optional[np.ndarray] = None
    class_names: dict = field(default_factory=lambda: dict(CLASS_NAMES))
    meta: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return int(self.truth.max())

    @property
    def given_mask(self) -> np.ndarray:
        """(X, Y, Z) bool: the voxels a method may label: the mask, or every voxel when there is none."""
        return self.mask if self.mask is not None else np.ones(self.image.shape, bool)

    def save(self, path) -> None:
        empty = np.zeros(0, np.int32)
        np.savez_compressed(
            path,
            name=self.name,
            image=self.image,
            spacing=np.array(self.spacing),
            affine=self.affine,
            roi=self.roi,
            truth=self.truth,
            scribbles=self.scribbles if self.scribbles is not None else empty,
            mask=self.mask if self.mask is not None else empty,
            description=self.description,
            class_names=json.dumps({str(k): v for k, v in self.class_names.items()}),
            meta=json.dumps(self.meta, default=str),
        )

    @classmethod
    def load(cls, path) -> Case:
        z = np.load(path)
        scribbles = z["scribbles"] if z["scribbles"].size else None
        mask = z["mask"].astype(bool) if "mask" in z and z["mask"].size else None
        names = (
            {int(k): v for k, v in json.loads(str(z["class_names"])).items()}
            if "class_names" in z
            else dict(CLASS_NAMES)
        )
        meta = json.loads(str(z["meta"])) if "meta" in z else {}
        return cls(
            str(z["name"]),
            z["image"],
            tuple(float(s) for s in z["spacing"]),
            z["affine"],
            z["roi"],
            z["truth"],
            scribbles,
            str(z["description"]),
            mask,
            names,
            meta,
        )


class Name(NamedTuple):
    """A parsed case name; the first four fields keep the old (dataset, resolution, noisy, scribbled) order."""

    dataset: str  # "mni", "colin", "itkt1", "headct", "chestct"
    resolution: Optional[int]  # mm where the name says it (mni2mm), else None
    noisy: bool
    scribbled: bool
    volume: str  # the devset.VOLUMES name, e.g. "mni2mm_nomask"
    style: Optional[str]  # scribble style, or None


def parse(name: str) -> Name:
    """'mni2mm_noisy_scribbles' -> Name('mni', 2, True, True, 'mni2mm', 'centreline'); ValueError on an unknown name."""
    match = _NAME.match(name)
    if not match or match.group("base") not in devset.VOLUMES:
        raise ValueError(
            f"unknown case {name!r}: expected {{volume}}[_noisy][_{'|_'.join(STROKES)}] with a volume "
            f"of {', '.join(devset.VOLUMES)} (e.g. mni2mm, mni1mm_noisy, headct_painted, chestct_nomask)"
        )
    base = match.group("base")
    head = base.split("_")[0]
    mm = re.fullmatch(r"([a-z]+)(\d+)mm", head)
    strokes = match.group("strokes")
    return Name(
        mm.group(1) if mm else head,
        int(mm.group(2)) if mm else None,
        bool(match.group("noisy")),
        strokes is not None,
        base,
        STROKES.get(strokes),
    )


def make_case(name: str) -> Case:
    """Build the named case (see the module docstring)."""
    parsed = parse(name)
    volume_name = parsed.volume + ("_noisy" if parsed.noisy else "")
    volume = devset.load(volume_name)
    case = Case(
        volume_name,
        np.ascontiguousarray(volume.image, dtype=np.float32),
        volume.spacing,
        volume.affine,
        volume.roi,
        volume.truth.astype(np.uint8),
        None,
        volume.description,
        None if volume.mask is None else volume.mask.astype(bool),
        dict(volume.class_names),
        dict(volume.meta),
    )
    return with_strokes(case, name) if parsed.scribbled else case


def with_strokes(volume_case: Case, name: str) -> Case:
    """The stroke case ``name`` (e.g. 'headct_painted') from its volume's case (e.g. 'headct'): the same image,
    truth and mask, with the style's simulated strokes (deterministic: made from the truth)."""
    style = parse(name).style
    scribbles = scribbles_from_truth(volume_case.truth, volume_case.roi, volume_case.spacing, style=style)
    names = volume_case.class_names
    counts = ", ".join(f"{names[k]} {int((scribbles == k).sum())}" for k in sorted(names))
    description = volume_case.description + f"; {style} strokes on 3 slices across the last axis ({counts} voxels)"
    return replace(volume_case, name=name, scribbles=scribbles, description=description)

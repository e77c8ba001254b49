"""Benchmark cases built from real data: an image, its ROI, its ground truth and optional scribbles.

Case names follow ``{dataset}{resolution}mm[_noisy][_scribbles]``:
- dataset ``mni``: the MNI152 2009a T1 template that nilearn ships (unsupervised_seg.demo.sample.mni152_arrays),
  truth = CSF/GM/WM (argmax of the template's probability maps) inside its brain mask. 1 and 2 mm come
  from nilearn; 4 mm is every second voxel of 2 mm (for smoke tests).
- dataset ``colin`` (held out, never used for tuning): Colin27 ("ch2bet", brain-extracted single-subject
  T1, 1 mm) from the Debian package ``mricron-data`` (apt-get install mricron-data). Its truth is
  THRESHOLD-DERIVED, not anatomical: the 1 mm image after a 3x3x3 median filter, split at the two
  valleys of its in-brain intensity histogram (CSF | GM | WM); at 2 mm the majority class of each
  2x2x2 block. It measures agreement with a denoised intensity split.
- ``_noisy``: a "realistic scan": smooth multiplicative bias field (total range BIAS_RANGE around 1,
  like BrainWeb's 20 % INU) and Rician noise with sigma = NOISE_FRACTION of the white-matter mean,
  both seeded; the truth is unchanged.
- ``_scribbles``: strokes on three axial slices made from the truth by unsupervised_seg.demo.simulated_scribbles.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from unsupervised_seg.demo.simulated_scribbles import scribbles_from_truth

NOISE_FRACTION = 0.05  # Rician sigma as a fraction of the white-matter mean (BrainWeb "5 %")
BIAS_RANGE = 0.2  # the bias field spans 1 - 0.1 .. 1 + 0.1 over the brain
NOISE_SEED = 2020
COLIN_PATH = Path("/usr/share/mricron/templates/ch2bet.nii.gz")
CLASS_NAMES = {1: "CSF", 2: "GM", 3: "WM"}
_NAME = re.compile(r"^(mni|colin)(\d+)mm((?:_noisy)?)((?:_scribbles)?)$")


@dataclass
class Case:
    """image (X, Y, Z) float32; roi (X, Y, Z) bool; truth (X, Y, Z) uint8 0..K; scribbles (X, Y, Z) int32 or None."""

    name: str
    image: np.ndarray
    spacing: tuple
    affine: np.ndarray
    roi: np.ndarray
    truth: np.ndarray
    scribbles: Optional[np.ndarray]
    description: str

    @property
    def n_classes(self) -> int:
        return int(self.truth.max())

    def save(self, path) -> None:
        np.savez_compressed(path, name=self.name, image=self.image, spacing=np.array(self.spacing),
                            affine=self.affine, roi=self.roi, truth=self.truth,
                            scribbles=self.scribbles if self.scribbles is not None else np.zeros(0, np.int32),
                            description=self.description)

    @classmethod
    def load(cls, path) -> "Case":
        z = np.load(path)
        scribbles = z["scribbles"] if z["scribbles"].size else None
        return cls(str(z["name"]), z["image"], tuple(float(s) for s in z["spacing"]), z["affine"], z["roi"],
                   z["truth"], scribbles, str(z["description"]))


def parse(name: str):
    """'mni2mm_noisy_scribbles' -> ('mni', 2, True, True); ValueError on an unknown name."""
    match = _NAME.match(name)
    if not match:
        raise ValueError(f"unknown case {name!r}: expected e.g. mni2mm, mni1mm_noisy, mni2mm_scribbles, colin1mm")
    return match.group(1), int(match.group(2)), bool(match.group(3)), bool(match.group(4))


def _mni(resolution: int):
    from unsupervised_seg.demo.sample import mni152_arrays

    if resolution == 4:
        image, roi, truth, affine = mni152_arrays(2)
        sub = (slice(None, None, 2),) * 3
        affine = affine.copy()
        affine[:3, :3] *= 2
        return (np.ascontiguousarray(image[sub]), np.ascontiguousarray(roi[sub]), np.ascontiguousarray(truth[sub]),
                affine, "MNI152 2009a T1 (nilearn), every 2nd voxel of 2 mm; truth = argmax of CSF/GM/WM maps")
    image, roi, truth, affine = mni152_arrays(resolution)
    return image, roi, truth, affine, f"MNI152 2009a T1 (nilearn) {resolution} mm; truth = argmax of CSF/GM/WM maps"


def histogram_valleys(values: np.ndarray, n_classes: int = 3, bins: int = 64) -> np.ndarray:
    """n_classes - 1 thresholds at the deepest valleys between the n_classes most prominent modes
    of the histogram of ``values`` (in [0, 1]), smoothed over one bin."""
    from scipy.signal import find_peaks

    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    smooth = ndi.gaussian_filter1d(hist.astype(float), 1.0)
    peaks, props = find_peaks(smooth, prominence=0)
    if len(peaks) < n_classes:
        raise ValueError(f"the histogram has {len(peaks)} modes, fewer than {n_classes} classes")
    modes = np.sort(peaks[np.argsort(-props["prominences"])[:n_classes]])
    valleys = [a + int(np.argmin(smooth[a:b])) for a, b in zip(modes[:-1], modes[1:])]
    return np.array([(edges[v] + edges[v + 1]) / 2 for v in valleys])


def _blocks(array: np.ndarray, r: int) -> np.ndarray:
    """(X, Y, Z) -> (X//r, Y//r, Z//r, r**3): the voxels of each r x r x r block."""
    x, y, z = (s // r for s in array.shape)
    a = array[: x * r, : y * r, : z * r].reshape(x, r, y, r, z, r)
    return a.transpose(0, 2, 4, 1, 3, 5).reshape(x, y, z, r ** 3)


def _colin(resolution: int):
    import nibabel as nib

    if not COLIN_PATH.exists():
        raise FileNotFoundError(f"{COLIN_PATH} not found: install the Debian package mricron-data "
                                "(apt-get install mricron-data) for the held-out Colin27 case")
    img = nib.load(COLIN_PATH)
    image = np.asarray(img.dataobj, dtype=np.float32)
    image /= image.max()
    roi = ndi.binary_fill_holes(image > 0)
    thresholds = histogram_valleys(ndi.median_filter(image, 3)[roi])
    truth = np.where(roi, np.digitize(ndi.median_filter(image, 3), thresholds) + 1, 0).astype(np.uint8)
    affine = img.affine.copy()
    if resolution != 1:  # r x r x r blocks: mean intensity, majority ROI, majority class
        r = resolution
        image = _blocks(image, r).mean(-1)
        votes = np.stack([(_blocks(truth, r) == k).sum(-1) for k in (1, 2, 3)], -1)
        roi = _blocks(roi, r).mean(-1) >= 0.5
        truth = np.where(roi, votes.argmax(-1) + 1, 0).astype(np.uint8)
        affine[:3, :3] *= r
    return (image.astype(np.float32), roi, truth, affine,
            f"Colin27 ch2bet (Debian mricron-data) {resolution} mm; THRESHOLD-DERIVED truth: 1 mm image, 3x3x3 "
            f"median filter, split at its in-brain histogram valleys {np.round(thresholds, 3).tolist()} (x max)"
            + (f", majority vote per {resolution} mm block" if resolution != 1 else ""))


def bias_field(shape, rng: np.random.Generator, spread: float = BIAS_RANGE) -> np.ndarray:
    """(X, Y, Z) float32 smooth multiplicative field: a random 2nd-order polynomial over the grid, range 1 +- spread/2."""
    axes = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    terms = [np.ones(shape, np.float32)] + list(axes) + [a * b for i, a in enumerate(axes) for b in axes[i:]]
    field = sum(float(c) * t for c, t in zip(rng.normal(size=len(terms)), terms))
    field = (field - field.min()) / max(float(field.max() - field.min()), 1e-6)
    return (1 - spread / 2 + spread * field).astype(np.float32)


def add_scan_artefacts(image: np.ndarray, truth: np.ndarray, seed: int = NOISE_SEED,
                       noise: float = NOISE_FRACTION, spread: float = BIAS_RANGE) -> np.ndarray:
    """Bias field times ``image``, then Rician noise (sigma = noise * white-matter mean, WM = truth's top class)."""
    rng = np.random.default_rng(seed)
    sigma = noise * float(image[truth == truth.max()].mean())
    biased = image * bias_field(image.shape, rng, spread)
    real = biased + rng.normal(0, sigma, image.shape).astype(np.float32)
    imag = rng.normal(0, sigma, image.shape).astype(np.float32)
    return np.sqrt(real ** 2 + imag ** 2).astype(np.float32)


def make_case(name: str) -> Case:
    """Build the named case (see the module docstring)."""
    dataset, resolution, noisy, scribbled = parse(name)
    loader = _mni if dataset == "mni" else _colin
    image, roi, truth, affine, description = loader(resolution)
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    if noisy:
        image = add_scan_artefacts(image, truth)
        description += f"; + bias field (range {BIAS_RANGE:.0%}) and Rician noise ({NOISE_FRACTION:.0%} of WM), seed {NOISE_SEED}"
    scribbles = None
    if scribbled:
        scribbles = scribbles_from_truth(truth, roi, spacing)
        description += f"; scribbles on 3 axial slices ({int((scribbles > 0).sum())} voxels)"
    return Case(name, np.ascontiguousarray(image, dtype=np.float32), spacing, affine, roi.astype(bool),
                truth.astype(np.uint8), scribbles, description)

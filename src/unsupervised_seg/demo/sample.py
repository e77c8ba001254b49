"""The bundled sample: MNI152 2009a T1 template at 2 mm with brain mask and tissue labels.

Tissue labels: 0 outside the brain mask, 1 = CSF, 2 = grey matter, 3 = white matter, the
argmax of (1 - GM - WM, GM, WM) from the template's probability maps. See data/LICENSE-MNI152.txt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
SAMPLE_T1 = DATA_DIR / "mni152_t1_2mm.nii.gz"
SAMPLE_MASK = DATA_DIR / "mni152_brainmask_2mm.nii.gz"
SAMPLE_TISSUES = DATA_DIR / "mni152_tissues_2mm.nii.gz"
TISSUE_NAMES = {1: "CSF", 2: "grey matter", 3: "white matter"}


def tissue_labels(gm: np.ndarray, wm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(*spatial) uint8: argmax of (1 - GM - WM, GM, WM) + 1 inside ``mask``, 0 outside."""
    gm, wm = gm.astype(np.float32), wm.astype(np.float32)
    probs = np.stack([np.clip(1 - gm - wm, 0, 1), gm, wm])
    return np.where(mask > 0, probs.argmax(0) + 1, 0).astype(np.uint8)


def mni152_arrays(resolution: int = 2) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(T1, brain mask, tissue labels, affine) from the copy of MNI152 that nilearn ships (no download).

    T1 is in [0, 1] as float32; resolution 1 or 2 (mm), or any other that nilearn resamples to.
    """
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=resolution)
    gm = datasets.load_mni152_gm_template(resolution=resolution).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=resolution).get_fdata()
    mask = datasets.load_mni152_brain_mask(resolution=resolution).get_fdata() > 0
    return t1.get_fdata().astype(np.float32), mask, tissue_labels(gm, wm, mask), t1.affine


def load_sample():
    """(Volume, brain mask bool array, tissue labels) of the bundled 2 mm sample."""
    import nibabel as nib

    from ..io import load_volume

    volume = load_volume(SAMPLE_T1)
    mask = np.asarray(nib.load(SAMPLE_MASK).dataobj) > 0
    tissues = np.asarray(nib.load(SAMPLE_TISSUES).dataobj).astype(np.uint8)
    return volume, mask, tissues

"""Derive the bundled sample (src/unsupervised_seg/data/) from the MNI152 2009a template shipped in nilearn.

Run once: python scripts/make_sample.py. Writes the T1 template, brain mask and tissue labels
(1 = CSF, 2 = grey matter, 3 = white matter: argmax of CSF = 1 - GM - WM, GM, WM inside the mask)
at 2 mm on the template's grid; the T1 is stored as uint8 (template intensity x 255).
"""
from pathlib import Path

import nibabel as nib
import numpy as np

from unsupervised_seg.demo.sample import mni152_arrays

OUT = Path(__file__).resolve().parents[1] / "src" / "unsupervised_seg" / "data"

if __name__ == "__main__":
    t1, mask, tissues, affine = mni152_arrays(resolution=2)
    for name, arr, dtype in [("mni152_t1_2mm", np.round(t1 * 255), np.uint8), ("mni152_brainmask_2mm", mask, np.uint8),
                             ("mni152_tissues_2mm", tissues, np.uint8)]:
        img = nib.Nifti1Image(arr.astype(dtype), affine)
        img.header.set_xyzt_units("mm")
        nib.save(img, OUT / f"{name}.nii.gz")
        print(OUT / f"{name}.nii.gz")

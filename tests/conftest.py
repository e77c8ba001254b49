"""Shared fixtures: the bundled MNI152 sample (real data) at 2 mm and a 4 mm downsample."""
import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def mni_2mm():
    """(Volume (1, 99, 117, 95), brain mask bool, tissue labels 0..3) of the bundled sample."""
    from unsupervised_seg.demo.sample import load_sample

    return load_sample()


@pytest.fixture(scope="session")
def mni_4mm(mni_2mm):
    """The bundled sample at 4 mm: every second voxel (T1), with the mask and labels taken the same way."""
    from unsupervised_seg import Volume

    volume, mask, tissues = mni_2mm
    sub = (slice(None, None, 2),) * 3
    affine = volume.affine.copy()
    affine[:3, :3] *= 2
    small = Volume(np.ascontiguousarray(volume.data[(slice(None),) + sub]), tuple(s * 2 for s in volume.spacing),
                   affine, source="MNI152 4 mm (bundled sample)")
    return small, np.ascontiguousarray(mask[sub]), np.ascontiguousarray(tissues[sub])

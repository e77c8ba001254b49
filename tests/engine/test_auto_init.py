"""init="auto": both clusterings of the intensities, keeping the more spatially coherent one.

On MR the Gaussian mixture models the tissues' unequal variances better; on CT's heavy-tailed HU histograms it
splits soft tissue and loses bone, where k-means does not (benchmarks/RESULTS.md). Real data: the bundled
MNI152 sample and 3D Slicer's chest CT.
"""

import numpy as np

from unsupervised_seg.engine.foreground import detect_foreground
from unsupervised_seg.engine.initialisation import initial_channels, label_changes
from unsupervised_seg.engine.preprocess import normalise_intensity


def _channels(volume, roi, method):
    image = normalise_intensity(volume, roi)
    return initial_channels(method, image, roi, 3)


def _agreement(a, b, roi):
    return float((a[roi] == b[roi]).mean())


def test_label_changes_counts_neighbour_pairs_that_differ():
    labels = np.zeros((4, 4), int)
    labels[:, 2:] = 1  # one vertical edge: 4 of the 24 neighbour pairs differ
    roi = np.ones_like(labels, bool)
    assert label_changes(labels, roi) == 4 / 24
    roi[:, 2:] = False  # no differing pair left inside the ROI
    assert label_changes(labels, roi) == 0


def test_auto_keeps_the_more_coherent_clustering(chest_ct, mni_4mm):
    ct, _ = chest_ct
    roi = detect_foreground(ct)
    auto, kmeans, gmm = (_channels(ct, roi, m) for m in ("auto", "kmeans", "gmm"))
    best = min((kmeans, gmm), key=lambda c: label_changes(c, roi))
    assert np.array_equal(auto, best)
    hu = ct.data[0]
    assert (auto[roi & (hu >= 300)] == 2).mean() > 0.95  # bone: the bright channel
    assert (auto[roi & (hu < -500)] == 0).mean() > 0.95  # lungs and air: the dark one

    mr, mask, _ = mni_4mm
    auto, gmm = _channels(mr, mask, "auto"), _channels(mr, mask, "gmm")
    assert np.array_equal(auto, gmm)  # the mixture, as measured on every MR of the development set

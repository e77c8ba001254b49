"""Label PNGs are palette images: viewable in colour, and read back as the same label values."""

import numpy as np
from PIL import Image

from unsupervised_seg.core.segments import label_color
from unsupervised_seg.core.volume import Volume
from unsupervised_seg.io import load_scribbles, save_labels
from unsupervised_seg.io.png import read_raster_labels, write_png


def test_palette_png_round_trip_and_colours(tmp_path):
    labels = np.zeros((40, 60), np.int32)
    for k in range(1, 14):  # 13 labels: more than the palette's 12 distinct colours, so it cycles
        labels[(k - 1) * 3 : (k - 1) * 3 + 3, k:] = k
    path = tmp_path / "labels.png"
    write_png(labels, path)
    with Image.open(path) as image:
        assert image.mode == "P"
        indices = np.asarray(image)
        rgb = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(indices, labels)
    np.testing.assert_array_equal(read_raster_labels(path), labels)
    assert tuple(rgb[labels == 0][0]) == (0, 0, 0)  # background black
    for k in (1, 2, 13):
        expected = tuple(round(255 * c) for c in label_color(k))
        assert {tuple(v) for v in rgb[labels == k]} == {expected}
    assert tuple(rgb[labels == 13][0]) == tuple(rgb[labels == 1][0])  # the palette cycles past 12
    assert rgb[labels > 0].mean() > 40  # not black in a viewer


def test_save_labels_png_is_palette_and_reads_back_as_scribbles(tmp_path):
    from skimage import data

    volume = Volume.from_array(data.camera()[::4, ::4].astype(np.float32))
    labels = (
        (np.arange(volume.spatial_shape[1])[None] * 5 // volume.spatial_shape[1] + 1)
        .repeat(volume.spatial_shape[0], 0)
        .astype(np.int64)
    )
    path = save_labels(labels, volume, tmp_path / "camera_labels.png")
    with Image.open(path) as image:
        assert image.mode == "P"
    np.testing.assert_array_equal(load_scribbles(path, volume)[0], labels)


def test_labels_above_255_stay_16_bit_grey(tmp_path):
    labels = np.arange(300 * 4, dtype=np.int32).reshape(30, 40) % 300
    path = tmp_path / "many.png"
    write_png(labels, path)
    np.testing.assert_array_equal(read_raster_labels(path).astype(np.int64), labels)
    with Image.open(path) as image:
        assert image.mode != "P"

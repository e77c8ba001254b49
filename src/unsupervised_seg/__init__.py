"""UnsupervisedSeg: segmentation of images and 3D medical volumes without training data.

Method: W. Kim, A. Kanezaki, M. Tanaka, "Unsupervised Learning of Image Segmentation Based on
Differentiable Feature Clustering", IEEE Transactions on Image Processing 29 (2020).

The public names below are imported on first use, so ``import unsupervised_seg.io`` (or the command
line's ``--help``) does not load torch.
"""

from importlib import import_module

from .core.version import __version__

_PUBLIC = {
    "ClusteringNet": ".engine.network",
    "InputError": ".core.errors",
    "SegmentationConfig": ".engine.config",
    "SegmentationResult": ".engine.segmenter",
    "Segmenter": ".engine.segmenter",
    "Volume": ".core.volume",
    "load_volume": ".io",
    "segment": ".engine.segmenter",
    "segment_files": ".api",
    "segment_sequence": ".engine.sequence",
}


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))


__all__ = sorted(_PUBLIC) + ["__version__"]

"""UnsupervisedSeg: segmentation of images and 3D medical volumes without training data.

Method: W. Kim, A. Kanezaki, M. Tanaka, "Unsupervised Learning of Image Segmentation Based on
Differentiable Feature Clustering", IEEE Transactions on Image Processing 29 (2020).
"""
from .config import SegmentationConfig
from .errors import InputError
from .network import ClusteringNet
from .segmenter import Segmenter, SegmentationResult, segment, segment_sequence
from .volume import Volume

__version__ = "0.1.0"


def load_volume(path, **kwargs) -> Volume:
    """Read an image file or DICOM series folder into a Volume (see unsupervised_seg.io)."""
    from .io import load_volume as _load

    return _load(path, **kwargs)


__all__ = ["ClusteringNet", "InputError", "SegmentationConfig", "SegmentationResult", "Segmenter", "Volume",
           "load_volume", "segment", "segment_sequence", "__version__"]

"""3D Slicer segmentations (.seg.nrrd) through slicerio: named, coloured segments.

slicerio's voxel arrays are in (i, j, k) index order with an index -> LPS matrix, the Volume's
order; 2D images get a third axis of length 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import slicerio

from ..core.errors import InputError
from ..core.segments import segment_table
from ..core.volume import Volume
from .grid import RAS_TO_LPS, index_to_lps, place_on_grid
from .nifti import label_dtype


def read_seg_nrrd(path, reference: Volume) -> Tuple[np.ndarray, Dict[int, str], Dict[int, tuple]]:
    """(labels (*spatial) int64 on the reference grid, names {k: name}, colours {k: rgb}).

    Segments are numbered 1..K in file order; where segments overlap, the later one wins.
    """
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as exc:  # pynrrd and slicerio raise several types for bad files
        raise InputError(f"cannot read as a Slicer segmentation ({exc.__class__.__name__}: {exc})", path) from None
    voxels = segmentation.get("voxels")
    segments = segmentation.get("segments", [])
    if voxels is None or voxels.ndim not in (3, 4):
        raise InputError("segmentation has no 3D voxel data", path)
    labels = np.zeros(voxels.shape[-3:], np.int64)
    names, colors = {}, {}
    for k, segment in enumerate(segments, start=1):
        labels[slicerio.segment_mask(segmentation, segment)] = k
        names[k] = segment.get("name") or f"Segment {k}"
        if "color" in segment:
            colors[k] = tuple(float(c) for c in segment["color"])
    if reference.spatial_dims == 2:
        if labels.shape[2] != 1:
            raise InputError(f"segmentation is 3D {labels.shape}, the image 2D", path)
        labels = labels[..., 0]
    to_ras = RAS_TO_LPS @ np.asarray(segmentation["ijkToLPS"], dtype=float)
    return place_on_grid(labels, to_ras, reference, path, "segmentation"), names, colors


def write_seg_nrrd(
    labels: np.ndarray,
    reference: Volume,
    path,
    class_names: Optional[Dict[int, str]] = None,
    class_colors: Optional[Dict[int, tuple]] = None,
) -> None:
    """Write labels (*spatial) as one layer of segments (value k -> segment "Cluster k" or its class name)."""
    voxels = labels if labels.ndim == 3 else labels[..., None]
    segmentation = slicerio.create_segmentation(voxels.shape, index_to_lps(reference), dtype=label_dtype(labels))
    segmentation["voxels"][...] = voxels
    extent = [v for n in voxels.shape for v in (0, n - 1)]
    segmentation["segments"] = [
        {
            "id": f"Segment_{entry['value']}",
            "name": entry["name"],
            "color": list(entry["color"]),
            "labelValue": entry["value"],
            "layer": 0,
            "extent": extent,
        }
        for entry in segment_table(np.unique(labels), class_names, class_colors)
    ]
    slicerio.write_segmentation(str(Path(path)), segmentation)

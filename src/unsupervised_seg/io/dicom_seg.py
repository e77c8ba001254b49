"""Write a label map as a DICOM Segmentation (SEG) object that references its source series (highdicom).

One BINARY segment per label value present (BINARY is what 3D Slicer's dcmqi and OHIF read best),
numbered 1..N in label order; empty labels get no segment. Frames are matched to the source images
by their geometry (the labels are handed to highdicom as a Volume with the source's affine), never by
array index, so the order of the source files does not matter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..core.errors import InputError
from ..core.segments import segment_table
from ..core.volume import Volume

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
SOFTWARE_NAME = "UnsupervisedSeg"


def write_dicom_seg(
    labels: np.ndarray, reference: Volume, path, class_names: Optional[Dict[int, str]] = None, scribbled: bool = False
) -> Path:
    """Write ``labels`` (K, R, C) ints on ``reference``'s grid as a DICOM SEG file at ``path``.

    reference: the Volume read by ``read_dicom_series`` (meta["dicom_datasets"] are the source images).
    class_names: {label: name} for scribble classes; other labels are named "Cluster k".
    scribbled: the labels were steered by user scribbles (algorithm type SEMIAUTOMATIC, else AUTOMATIC).
    The file is written to a temporary name beside ``path`` and renamed into place. Returns ``path``.
    Raises InputError when the reference is not a DICOM series, the shapes differ, or no voxel is labelled.
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    path = Path(path)
    datasets = reference.meta.get("dicom_datasets")
    if not datasets:
        raise InputError(
            "DICOM SEG output needs a DICOM series as input (the input was not read from DICOM)", reference.source
        )
    labels = np.asarray(labels)
    if labels.shape != reference.spatial_shape:
        raise InputError(
            f"label map shape {labels.shape} differs from the DICOM series' {reference.spatial_shape}", path
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise InputError("label map must hold non-negative integers", path)
    present = np.unique(labels)
    present = present[present != 0]
    if present.size == 0:
        raise InputError("nothing to write: the segmentation has no labelled voxel", path)
    sources = {str(p) for p in reference.meta.get("dicom_files", [])}
    if str(path.resolve()) in {str(Path(s).resolve()) for s in sources}:
        raise InputError("refusing to overwrite a source DICOM file", path)

    table = segment_table(present.tolist(), class_names)
    segment_numbers = np.zeros(int(present.max()) + 1, dtype=np.uint16)
    segment_numbers[present] = np.arange(1, present.size + 1)
    dtype = np.uint8 if present.size < 256 else np.uint16
    ds0 = datasets[0]
    frames = hd.Volume(
        segment_numbers[labels].astype(dtype),
        RAS_TO_LPS @ reference.affine,
        "PATIENT",
        frame_of_reference_uid=ds0.get("FrameOfReferenceUID"),
    )
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_segment_descriptions(table, scribbled),
            series_instance_uid=generate_uid(),
            series_number=_series_number(ds0),
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer=SOFTWARE_NAME,
            manufacturer_model_name=SOFTWARE_NAME,
            software_versions=_version(),
            device_serial_number="0",
            series_description=f"{SOFTWARE_NAME} segmentation",
            content_label="UNSUPERVISEDSEG",
            content_description=f"{'Scribble-guided' if scribbled else 'Unsupervised'} segmentation, "
            f"{present.size} segments",
        )
    except (ValueError, TypeError, AttributeError) as err:
        raise InputError(f"cannot build a DICOM SEG on this series: {err}", reference.source) from None

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        seg.save_as(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _segment_descriptions(table, scribbled: bool):
    """highdicom SegmentDescriptions for segment_table entries, numbered 1..N in table order."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=SOFTWARE_NAME, family=codes.cid7162.ClusterAnalysis, version=_version()
    )
    algorithm_type = (
        hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if scribbled else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=entry["name"][:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=algorithm_type,
            algorithm_identification=algorithm,
            tracking_id=f"label {entry['value']}",
            tracking_uid=hd.UID(),
            display_color=hd.color.CIELabColor.from_rgb(*(round(255 * c) for c in entry["color"])),
        )
        for number, entry in enumerate(table, start=1)
    ]


def _series_number(source) -> int:
    """A series number for the SEG that sorts after the source series."""
    try:
        return int(source.get("SeriesNumber") or 0) + 1000
    except (TypeError, ValueError):
        return 1000


def _version() -> str:
    from ..core.version import __version__

    return __version__

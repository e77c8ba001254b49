"""Helpers that write DICOM test series with pydicom (no network, no downloaded data).

``write_series`` writes any (K, R, C) array as a single-frame series: one file per slice, with the
Patient, General Study, General Series, Frame of Reference, General Equipment, General Image,
Image Plane, Image Pixel, MR Image and SOP Common modules filled, so that dciodvfy accepts it.

``write_mni_series`` makes a realistic MR series from the bundled MNI152 T1 sample
(unsupervised_seg.demo.sample.SAMPLE_T1, 2 mm, RAS affine):

1. take every ``step``-th voxel (step 2 -> 4 mm voxels, 50 x 59 x 48) and optionally a slab of axial slices;
2. lay it out the way scanners store axial slices: slice k runs inferior -> superior, rows run
   anterior -> posterior and columns right -> left, i.e. ImageOrientationPatient = [1,0,0, 0,1,0]
   in DICOM's LPS patient coordinates; pixel[k, r, c] = nifti[I-1-c, J-1-r, k];
3. store intensities as uint16 with RescaleSlope 0.25 and RescaleIntercept 10 (real value =
   T1 + 10), so a reader that ignores the rescale is caught;
4. ImagePositionPatient of slice k = the LPS position of voxel (k, 0, 0) from the NIfTI affine;
5. files get random names and are written in random order; InstanceNumber can be made to run
   against the slice position, so nothing may rely on file names, directory order or InstanceNumber.

``check_seg`` asserts that a DICOM SEG file encodes a label map on a series' source images, frame by frame.

Tests reach this module through the ``dicom_series`` fixture (tests/conftest.py), never by importing it.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_series(
    folder,
    values: np.ndarray,
    affine_lps: np.ndarray,
    *,
    rescale: Tuple[float, float] = (1.0, 0.0),
    series_uid: Optional[str] = None,
    study_uid: Optional[str] = None,
    frame_of_reference_uid: Optional[str] = None,
    series_number: int = 3,
    series_description: str = "T1 MPRAGE",
    reversed_instance_numbers: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0,
) -> List[Path]:
    """Write ``values`` (K, R, C) real-valued voxels as an MR series of K files in ``folder``.

    affine_lps: 4x4 matrix from array index (k, r, c) to DICOM patient coordinates (LPS, mm); its
    r and c columns must be orthogonal. Stored pixels are round((values - intercept) / slope) as uint16.
    Returns the file paths in slice order (k = 0..K-1); the names themselves are random.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    values = np.asarray(values, dtype=np.float64)
    slope, intercept = rescale
    stored = np.round((values - intercept) / slope)
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError("values do not fit uint16 with this rescale")
    stored = stored.astype(np.uint16)
    n_slices, rows, cols = values.shape
    step_k, step_r, step_c = (affine_lps[:3, i] for i in range(3))
    row_spacing, col_spacing = float(np.linalg.norm(step_r)), float(np.linalg.norm(step_c))
    orientation = np.concatenate([step_c / col_spacing, step_r / row_spacing])
    normal = np.cross(orientation[:3], orientation[3:])
    rng = np.random.default_rng(seed)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    now = datetime.datetime(2024, 5, 17, 9, 30, 0)
    names = [f"IM{v:08d}" for v in rng.choice(10**8, size=n_slices, replace=False)]
    paths = [folder / name for name in names]
    for k in rng.permutation(n_slices):
        position = affine_lps[:3, :3] @ np.array([k, 0.0, 0.0]) + affine_lps[:3, 3]
        ds = _mr_dataset(study_uid, series_uid, frame_of_reference_uid, series_number, series_description, now)
        ds.InstanceNumber = int(n_slices - k if reversed_instance_numbers else k + 1)
        ds.ImagePositionPatient = [_ds_value(v) for v in position]
        ds.ImageOrientationPatient = [_ds_value(v) for v in orientation]
        ds.PixelSpacing = [_ds_value(row_spacing), _ds_value(col_spacing)]
        ds.SliceThickness = _ds_value(float(np.linalg.norm(step_k)))
        ds.SliceLocation = _ds_value(float(position @ normal))
        ds.Rows, ds.Columns = rows, cols
        ds.RescaleSlope, ds.RescaleIntercept = _ds_value(slope), _ds_value(intercept)
        ds.WindowCenter, ds.WindowWidth = _ds_value(float(values.mean())), _ds_value(float(np.ptp(values)) or 1.0)
        ds.PixelData = stored[k].tobytes()
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax)
        ds.save_as(paths[k], enforce_file_format=True)
    return paths


def _mr_dataset(study_uid, series_uid, frame_of_reference_uid, series_number, series_description, now) -> Dataset:
    """An MR Image dataset with every module except the per-slice geometry and pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.InstanceCreationDate = ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = "ACC0001"
    ds.Modality = "MR"
    ds.Manufacturer = "UnsupervisedSeg test fixture"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "MNI152 template study"
    ds.SeriesDescription = series_description
    ds.PatientName = "MNI152^Template"
    ds.PatientID = "MNI152"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "BRAIN"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SP"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.RepetitionTime = "2000"
    ds.EchoTime = "3.0"
    ds.EchoTrainLength = "1"
    ds.MagneticFieldStrength = "3"
    ds.ImagedNucleus = "1H"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def _ds_value(value: float) -> str:
    """A decimal string (VR DS, at most 16 characters) for ``value``."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6e}"


def mni_axial(step: int = 2, slab: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The bundled T1 laid out as axial DICOM slices: (values (K, R, C) float, affine (k, r, c) -> LPS).

    step: subsampling of the 2 mm grid (2 -> 4 mm). slab: (first, stop) axial slice range after subsampling.
    """
    import nibabel as nib

    from unsupervised_seg.demo.sample import SAMPLE_T1

    image = nib.load(SAMPLE_T1)
    t1 = np.asarray(image.dataobj, dtype=np.float64)[::step, ::step, ::step]
    ras = image.affine.copy()
    ras[:3, :3] *= step
    k0, k1 = slab if slab is not None else (0, t1.shape[2])
    t1 = t1[:, :, k0:k1]
    n_i, n_j, _ = t1.shape
    # (k, r, c) -> (i, j, k_nifti) = (I-1-c, J-1-r, k0+k)
    ijk_from_krc = np.array([[0, 0, -1, n_i - 1], [0, -1, 0, n_j - 1], [1, 0, 0, k0], [0, 0, 0, 1]], dtype=float)
    values = t1[::-1, ::-1, :].transpose(2, 1, 0) + 10.0
    return np.ascontiguousarray(values), LPS_FROM_RAS @ ras @ ijk_from_krc


def write_mni_series(
    folder, step: int = 2, slab: Optional[Sequence[int]] = None, **kw
) -> Tuple[List[Path], np.ndarray, np.ndarray]:
    """Write the bundled MNI152 T1 as an axial MR series (see the module docstring).

    Returns (file paths in slice order, values (K, R, C) a reader must return, affine (k, r, c) -> LPS).
    """
    values, affine_lps = mni_axial(step, slab)
    paths = write_series(folder, values, affine_lps, rescale=(0.25, 10.0), **kw)
    return paths, values, affine_lps


def check_seg(path, volume, labels, names, algorithm_type):
    """Assert the SEG at ``path`` encodes ``labels`` on ``volume``'s source images, frame by frame."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from unsupervised_seg import __version__

    cluster_analysis = codes.cid7162.ClusterAnalysis

    seg = pydicom.dcmread(path)
    present = [int(v) for v in np.unique(labels) if v != 0]
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage and seg.SegmentationType == "BINARY"
    # one segment per label present, numbered 1..N in label order, named and coded
    assert [s.SegmentNumber for s in seg.SegmentSequence] == list(range(1, len(present) + 1))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [names.get(v, f"Cluster {v}") for v in present]
    value_of = {s.SegmentNumber: v for s, v in zip(seg.SegmentSequence, present)}
    for s in seg.SegmentSequence:
        assert s.SegmentAlgorithmType == algorithm_type
        assert s.SegmentAlgorithmName == "UnsupervisedSeg"
        assert s.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Tissue"
        assert s.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"
        assert len(s.RecommendedDisplayCIELabValue) == 3
        algorithm = s.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "UnsupervisedSeg" and algorithm.AlgorithmVersion == __version__
        family = algorithm.AlgorithmFamilyCodeSequence[0]
        assert (family.CodeValue, family.CodingSchemeDesignator) == (
            cluster_analysis.value,
            cluster_analysis.scheme_designator,
        )
    assert seg.SoftwareVersions == __version__ and seg.Manufacturer == "UnsupervisedSeg"
    # same patient, study and frame of reference; every source instance referenced
    sources = volume.meta["dicom_datasets"]
    for key in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert seg[key].value == sources[0][key].value
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence} == {
        ds.SOPInstanceUID for ds in sources
    }
    # frame by frame: position -> source slice k, pixels == (labels[k] == value), right source image
    lps_from_index = np.linalg.inv(LPS_FROM_RAS @ volume.affine)
    frames = seg.pixel_array.reshape((-1,) + labels.shape[1:])
    seen = set()
    shared = seg.SharedFunctionalGroupsSequence[0]
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        number = item.get("SegmentIdentificationSequence", shared.get("SegmentIdentificationSequence"))[
            0
        ].ReferencedSegmentNumber
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        k, r, c = (lps_from_index @ (position + [1.0]))[:3]
        assert abs(k - round(k)) < 1e-3 and abs(r) < 1e-3 and abs(c) < 1e-3
        k = int(round(k))
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        if len(sources) > 1:
            assert source.ReferencedSOPInstanceUID == sources[k].SOPInstanceUID
        np.testing.assert_array_equal(frame, labels[k] == value_of[number])
        seen.add((k, number))
    needed = {(k, n) for n, v in value_of.items() for k in range(labels.shape[0]) if (labels[k] == v).any()}
    assert needed <= seen
    # highdicom's own reader agrees
    if len(sources) > 1:
        pixels = hd.seg.segread(path).get_pixels_by_source_instance(
            [ds.SOPInstanceUID for ds in sources], combine_segments=True, relabel=False
        )
        lut = np.array([0] + present)
        np.testing.assert_array_equal(lut[pixels], labels)

"""The development set: real volumes of several kinds, each with a ground truth, a mask (or none) and metadata.

    python benchmarks/devset.py --fetch        # once: the Debian sample packages into the cache (no root needed)
    python benchmarks/devset.py --list         # every volume: source, shape, spacing, class sizes
    python benchmarks/devset.py --overview F   # a PNG with one slice of each volume and its truth

Volumes (one function each; ``load(name)`` builds any of them). ``mask`` is what the methods get
(None = no mask: they see the whole grid); ``truth`` is 0 outside the scored region, 1..K inside.

| name | image | truth | mask given |
|---|---|---|---|
| mni1mm, mni2mm, mni4mm | MNI152 2009a T1 template (nilearn ships it brain-extracted: ~0 outside the brain) | argmax of its CSF/GM/WM maps in its brain mask | brain mask |
| mni2mm_nomask | the package's bundled 2 mm sample (unsupervised_seg demo data): the same brain, zeros around it | the bundled tissue labels | none |
| colin1mm, colin2mm | Colin27 ch2bet (Debian mricron-data), brain-extracted single-subject T1 | THRESHOLD: histogram valleys of the 3x3x3-median image | brain |
| colin2mm_nomask | Colin27 ch2 (same subject and grid, whole head) | as colin2mm | none |
| itkt1, itkt1_nomask | ITK's example T1 (Debian insighttoolkit5-examples), single subject, 2 x 2 x 3 mm, whole head | ATROPOS WITH PRIORS: brain mask and CSF/GM/WM priors from MNI152 (nilearn) by ANTs SyN registration; committed in data/itkt1_truth.nii.gz | brain / none |
| headct, headct_nomask | head CT (Debian invesalius-examples, "ProMED CT 0051"), HU, 2x2 in-plane mean -> 1.91 x 1.91 x 1.5 mm | THRESHOLD in HU inside the body: air < -500, soft tissue, bone >= 300 | body / none |
| headct_padded | headct as int16 with -32768 (a DICOM PixelPaddingValue) outside a circular field of view and on its top 4 slices | as headct, inside the field of view | none |
| chestct, chestct_nomask | chest CT (PyPI slicerio, CTChest4.nrrd), HU, 3.05 x 3.05 x 10 mm, -3024 outside the circular field of view | as headct (lungs are the air class) | body / none |

``noisy(volume)`` adds artefacts with a fixed seed: MR, a smooth multiplicative bias field (range 20 %) and
Rician noise (sigma 5 % of the brightest class's mean); CT, Gaussian noise (sigma 30 HU) and a smooth
additive offset field (range 40 HU), inside the field of view only. The truth is unchanged.

Where the files come from (nothing downloads while a benchmark runs):
- nilearn and slicerio (PyPI) are dependencies of the project; their data is in the installed packages.
- The Debian packages (mricron-data, invesalius-examples, insighttoolkit5-examples) are looked for where
  ``apt-get install`` puts them (/usr/share/...), then in the cache (``$UNSUPERVISED_SEG_DEVSET``, default
  ~/.cache/unsupervised-seg-devset) that ``--fetch`` fills with ``apt-get download`` + ``dpkg -x``.
"""

from __future__ import annotations

import argparse
import io
import os
import plistlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
from scipy import ndimage as ndi

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
CACHE = Path(os.environ.get("UNSUPERVISED_SEG_DEVSET", Path.home() / ".cache" / "unsupervised-seg-devset"))

# Debian package -> {file key: path inside the package}
DEBIAN_FILES = {
    "mricron-data": {
        "ch2bet": "usr/share/mricron/templates/ch2bet.nii.gz",
        "ch2": "usr/share/mricron/templates/ch2.nii.gz",
    },
    "invesalius-examples": {"cranium": "usr/share/doc/invesalius-examples/examples/Cranium.inv3"},
    "insighttoolkit5-examples": {
        "itkt1": "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz"
    },
}
LICENCES = {
    "mricron-data": "BSD-3-clause (Debian copyright of mricron-data; Colin27 by the MNI, free use with attribution)",
    "invesalius-examples": "GPL-2 (Debian copyright of invesalius-examples, CTI Renato Archer)",
    "insighttoolkit5-examples": "Apache-2.0 (Insight Software Consortium)",
    "slicerio": "MIT (slicerio, A. Lasso; the image is 3D Slicer's CTChest sample, downsampled)",
    "nilearn": "MNI152 2009a: free use with attribution (see LICENSE-MNI152.txt of the bundled sample)",
}
FETCH_COMMAND = "python benchmarks/devset.py --fetch"

MR_NAMES = {1: "CSF", 2: "GM", 3: "WM"}
CT_NAMES = {1: "air", 2: "soft tissue", 3: "bone"}
CT_AIR_HU, CT_BONE_HU = -500.0, 300.0
NOISE_SEED = 2020
MR_NOISE, MR_BIAS = 0.05, 0.2  # Rician sigma / brightest class mean; bias field range
CT_NOISE_HU, CT_OFFSET_HU = 30.0, 40.0  # Gaussian sigma; range of the smooth additive offset
PADDED_VALUE = -32768  # int16 padding (DICOM PixelPaddingValue) in headct_padded
PADDED_TOP_SLICES = 4


@dataclass
class DevVolume:
    """image (X, Y, Z) float32; truth (X, Y, Z) uint8, 0 outside the scored region; mask (X, Y, Z) bool or None."""

    name: str
    image: np.ndarray
    spacing: tuple
    affine: np.ndarray
    truth: np.ndarray
    mask: Optional[np.ndarray]
    class_names: Dict[int, str]
    meta: dict = field(default_factory=dict)

    @property
    def roi(self) -> np.ndarray:
        """(X, Y, Z) bool: where Dice is counted (the truth's classes)."""
        return self.truth > 0

    @property
    def n_classes(self) -> int:
        return int(self.truth.max())

    @property
    def description(self) -> str:
        m = self.meta
        masked = "mask given" if self.mask is not None else "NO mask given"
        return (
            f"{m.get('source', '')} [{m.get('package', '')} {m.get('version', '')}]; truth: {m.get('truth', '')}; "
            f"{masked}" + (f"; {m['variant']}" if m.get("variant") else "")
        )


# ---------------------------------------------------------------------------------------------- files


def _debian_version(package: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status} ${Version}", package], capture_output=True, text=True, check=False
        ).stdout
        if out.startswith("install ok installed"):
            return out.split()[-1]
    except FileNotFoundError:
        pass
    stamp = CACHE / package / "VERSION"
    return stamp.read_text().strip() if stamp.exists() else "unknown"


def locate(package: str, key: str) -> Path:
    """Path of a file of a Debian sample package: installed (/usr/share/...) or in the --fetch cache."""
    inside = DEBIAN_FILES[package][key]
    for path in (Path("/") / inside, CACHE / package / inside):
        if path.exists():
            return path
    raise FileNotFoundError(
        f"{inside} of the Debian package {package} not found: run `{FETCH_COMMAND}` (or `apt-get install {package}`)"
    )


def fetch(packages=tuple(DEBIAN_FILES)) -> None:
    """apt-get download + dpkg -x each package into CACHE/<package>/ (once; needs Debian's apt, not root)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for package in packages:
        target = CACHE / package
        if all((target / p).exists() for p in DEBIAN_FILES[package].values()):
            print(f"{package}: already in {target}")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["apt-get", "download", package], cwd=tmp, check=True)
            deb = next(Path(tmp).glob(f"{package}_*.deb"))
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run(["dpkg", "-x", str(deb), str(target)], check=True)
            (target / "VERSION").write_text(deb.name.split("_")[1] + "\n")
        print(f"{package}: extracted to {target}")


def _affine(spacing) -> np.ndarray:
    return np.diag([*map(float, spacing), 1.0])


def _spacing(affine: np.ndarray) -> tuple:
    return tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))


# ---------------------------------------------------------------------------------------------- helpers


def histogram_valleys(values: np.ndarray, n_classes: int = 3, bins: int = 64) -> np.ndarray:
    """n_classes - 1 thresholds at the deepest valleys between the n_classes most prominent modes
    of the histogram of ``values`` (in [0, 1]), smoothed over one bin."""
    from scipy.signal import find_peaks

    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    smooth = ndi.gaussian_filter1d(hist.astype(float), 1.0)
    peaks, props = find_peaks(smooth, prominence=0)
    if len(peaks) < n_classes:
        raise ValueError(f"the histogram has {len(peaks)} modes, fewer than {n_classes} classes")
    modes = np.sort(peaks[np.argsort(-props["prominences"])[:n_classes]])
    valleys = [a + int(np.argmin(smooth[a:b])) for a, b in zip(modes[:-1], modes[1:])]
    return np.array([(edges[v] + edges[v + 1]) / 2 for v in valleys])


def blocks(array: np.ndarray, r) -> np.ndarray:
    """(X, Y, Z) -> (X//rx, Y//ry, Z//rz, rx*ry*rz): the voxels of each block (r: int or 3 ints)."""
    r = (r,) * 3 if np.isscalar(r) else tuple(r)
    x, y, z = (s // f for s, f in zip(array.shape, r))
    a = array[: x * r[0], : y * r[1], : z * r[2]].reshape(x, r[0], y, r[1], z, r[2])
    return a.transpose(0, 2, 4, 1, 3, 5).reshape(x, y, z, int(np.prod(r)))


def bias_field(shape, rng: np.random.Generator, spread: float = MR_BIAS) -> np.ndarray:
    """(X, Y, Z) float32 smooth field: a random 2nd-order polynomial over the grid, range 1 +- spread/2."""
    axes = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    terms = [np.ones(shape, np.float32)] + list(axes) + [a * b for i, a in enumerate(axes) for b in axes[i:]]
    f = sum(float(c) * t for c, t in zip(rng.normal(size=len(terms)), terms))
    f = (f - f.min()) / max(float(f.max() - f.min()), 1e-6)
    return (1 - spread / 2 + spread * f).astype(np.float32)


def add_scan_artefacts(
    image: np.ndarray, truth: np.ndarray, seed: int = NOISE_SEED, noise: float = MR_NOISE, spread: float = MR_BIAS
) -> np.ndarray:
    """MR: bias field times ``image``, then Rician noise (sigma = noise * mean of the truth's top class)."""
    rng = np.random.default_rng(seed)
    sigma = noise * float(image[truth == truth.max()].mean())
    biased = image * bias_field(image.shape, rng, spread)
    real = biased + rng.normal(0, sigma, image.shape).astype(np.float32)
    imag = rng.normal(0, sigma, image.shape).astype(np.float32)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


def add_ct_artefacts(
    image: np.ndarray,
    fov: np.ndarray,
    seed: int = NOISE_SEED,
    noise_hu: float = CT_NOISE_HU,
    offset_hu: float = CT_OFFSET_HU,
) -> np.ndarray:
    """CT: Gaussian noise (sigma noise_hu) plus a smooth offset field (range offset_hu), inside ``fov`` only."""
    rng = np.random.default_rng(seed)
    offset = (bias_field(image.shape, rng, 1.0) - 1.0) * offset_hu  # range offset_hu around 0
    out = image + offset + rng.normal(0, noise_hu, image.shape).astype(np.float32)
    return np.where(fov, out, image).astype(np.float32)


def fill_holes_2d(mask: np.ndarray, axis: int = 2) -> np.ndarray:
    """Fill holes slice by slice across ``axis`` (lungs, sinuses) and in 3-D."""
    out = np.moveaxis(mask.copy(), axis, 0)
    for i in range(out.shape[0]):
        out[i] = ndi.binary_fill_holes(out[i])
    return ndi.binary_fill_holes(np.moveaxis(out, 0, axis))


def body_mask(hu: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool: the patient. HU > -500 in the field of view, opened by 1 voxel in-plane (cuts thin bridges to
    the table and head-rest), largest 3-D component, grown back 2 voxels within HU > -500, holes filled per slice."""
    dense = (hu > CT_AIR_HU) & fov
    in_plane = np.ones((3, 3, 1), bool)
    opened = ndi.binary_opening(dense, structure=in_plane, iterations=1)
    parts, n = ndi.label(opened)
    if n == 0:
        raise ValueError("no body found above -500 HU")
    largest = parts == 1 + int(np.argmax(ndi.sum_labels(opened, parts, np.arange(1, n + 1))))
    grown = ndi.binary_dilation(largest, structure=in_plane, iterations=2, mask=dense)
    return fill_holes_2d(grown) & fov


def ct_truth(hu: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(X, Y, Z) uint8 inside ``region``: 1 air (< -500 HU), 2 soft tissue, 3 bone (>= 300 HU); 0 outside."""
    classes = np.digitize(hu, [CT_AIR_HU, CT_BONE_HU]) + 1
    return np.where(region, classes, 0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- MR


def _nilearn_version() -> str:
    from importlib import metadata

    return metadata.version("nilearn")


def mni(resolution: int = 2) -> DevVolume:
    """MNI152 2009a T1 template from nilearn at 1 or 2 mm (4 mm: every 2nd voxel of 2 mm), brain mask given."""
    try:
        from unsupervised_seg.demo.sample import mni152_arrays
    except ImportError:  # before the package's layout moved
        from unsupervised_seg.sample import mni152_arrays

    image, roi, truth, affine = mni152_arrays(2 if resolution == 4 else resolution)
    source = f"MNI152 2009a symmetric T1 template (brain-extracted), {resolution} mm"
    if resolution == 4:
        sub = (slice(None, None, 2),) * 3
        image, roi, truth = (np.ascontiguousarray(a[sub]) for a in (image, roi, truth))
        affine = affine.copy()
        affine[:3, :3] *= 2
        source += " (every 2nd voxel of 2 mm)"
    return DevVolume(
        f"mni{resolution}mm",
        image.astype(np.float32),
        _spacing(affine),
        affine,
        np.where(roi, truth, 0).astype(np.uint8),
        roi.astype(bool),
        dict(MR_NAMES),
        {
            "kind": "MR template",
            "source": source,
            "package": "nilearn (PyPI)",
            "version": _nilearn_version(),
            "licence": LICENCES["nilearn"],
            "truth": "argmax of (1 - GM - WM, GM, WM) probability maps inside the template's brain mask",
            "obtain": "pip install nilearn (a dev dependency)",
        },
    )


def mni2mm_nomask() -> DevVolume:
    """The package's bundled 2 mm sample WITHOUT its mask (the brain and the zeros around it: the template is
    brain-extracted); truth = the bundled tissue labels."""
    import nibabel as nib

    try:
        from unsupervised_seg.demo import sample
    except ImportError:
        from unsupervised_seg import sample
    img = nib.load(sample.SAMPLE_T1)
    image = np.asarray(img.dataobj, dtype=np.float32)
    tissues = np.asarray(nib.load(sample.SAMPLE_TISSUES).dataobj).astype(np.uint8)
    brain = np.asarray(nib.load(sample.SAMPLE_MASK).dataobj) > 0
    from importlib import metadata

    return DevVolume(
        "mni2mm_nomask",
        image,
        _spacing(img.affine),
        img.affine.copy(),
        np.where(brain, tissues, 0).astype(np.uint8),
        None,
        dict(MR_NAMES),
        {
            "kind": "MR template",
            "source": "the bundled sample (MNI152 2009a T1, 2 mm, brain-extracted: 0 outside the brain) "
            f"at {Path(sample.SAMPLE_T1).name}",
            "package": "unsupervised-seg",
            "version": metadata.version("unsupervised-seg"),
            "licence": LICENCES["nilearn"],
            "truth": "the bundled tissue labels (argmax of the CSF/GM/WM maps) inside the bundled brain mask",
            "obtain": "shipped with the package",
            "variant": "no mask: the zero background is given too",
        },
    )


def _colin_truth(image: np.ndarray, roi: np.ndarray):
    med = ndi.median_filter(image, 3)
    thresholds = histogram_valleys(med[roi])
    return np.where(roi, np.digitize(med, thresholds) + 1, 0).astype(np.uint8), thresholds


def colin(resolution: int = 1, mask: bool = True) -> DevVolume:
    """Colin27 (mricron-data): ch2bet with its brain as mask, or (mask=False) the whole-head ch2, no mask given.

    Truth (both): the 1 mm ch2bet after a 3x3x3 median filter, split at the two valleys of its in-brain
    histogram; at 2 mm the majority class of each 2x2x2 block (and the mean intensity)."""
    import nibabel as nib

    bet = nib.load(locate("mricron-data", "ch2bet"))
    brain_img = np.asarray(bet.dataobj, dtype=np.float32)
    brain_img /= brain_img.max()
    roi = ndi.binary_fill_holes(brain_img > 0)
    truth, thresholds = _colin_truth(brain_img, roi)
    if mask:
        image = brain_img
    else:
        head = nib.load(locate("mricron-data", "ch2"))
        if head.shape != bet.shape or not np.allclose(head.affine, bet.affine):
            raise ValueError("ch2 and ch2bet are not on one grid")
        image = np.asarray(head.dataobj, dtype=np.float32)
        image /= image.max()
    affine = bet.affine.copy()
    if resolution != 1:
        r = resolution
        image = blocks(image, r).mean(-1)
        votes = np.stack([(blocks(truth, r) == k).sum(-1) for k in (1, 2, 3)], -1)
        roi = blocks(roi, r).mean(-1) >= 0.5
        truth = np.where(roi, votes.argmax(-1) + 1, 0).astype(np.uint8)
        affine[:3, :3] *= r
    name = f"colin{resolution}mm" + ("" if mask else "_nomask")
    return DevVolume(
        name,
        image.astype(np.float32),
        _spacing(affine),
        affine,
        truth,
        roi if mask else None,
        dict(MR_NAMES),
        {
            "kind": "MR single subject",
            "package": "mricron-data (Debian)",
            "source": f"Colin27 {'ch2bet (brain-extracted)' if mask else 'ch2 (whole head)'} T1, "
            f"{resolution} mm" + (" (2x2x2 block mean)" if resolution != 1 else ""),
            "version": _debian_version("mricron-data"),
            "licence": LICENCES["mricron-data"],
            "truth": "THRESHOLD-DERIVED: ch2bet 1 mm, 3x3x3 median, split at its in-brain histogram valleys "
            f"{[round(float(t), 3) for t in thresholds]} (x max)"
            + (f", majority per {resolution} mm block" if resolution != 1 else ""),
            "obtain": FETCH_COMMAND,
            **({} if mask else {"variant": "no mask: the whole head is given"}),
        },
    )


ITKT1_TRUTH = DATA / "itkt1_truth.nii.gz"


def itkt1(mask: bool = True) -> DevVolume:
    """ITK's example T1 (single subject, 2 x 2 x 3 mm, whole head); truth committed in data/itkt1_truth.nii.gz."""
    import nibabel as nib

    img = nib.load(locate("insighttoolkit5-examples", "itkt1"))
    image = np.asarray(img.dataobj, dtype=np.float32)
    image /= image.max()
    truth = np.asarray(nib.load(ITKT1_TRUTH).dataobj).astype(np.uint8)
    if truth.shape != image.shape:
        raise ValueError(f"{ITKT1_TRUTH} {truth.shape} does not match the image {image.shape}")
    return DevVolume(
        "itkt1" + ("" if mask else "_nomask"),
        image,
        _spacing(img.affine),
        img.affine.copy(),
        truth,
        (truth > 0) if mask else None,
        dict(MR_NAMES),
        {
            "kind": "MR single subject (anisotropic)",
            "package": "insighttoolkit5-examples (Debian)",
            "source": "ITK Examples/Data/KmeansTest_T1UCharRaw.nii.gz: T1, 2 x 2 x 3 mm, whole head, "
            "partly zeroed below the skull base",
            "version": _debian_version("insighttoolkit5-examples"),
            "licence": LICENCES["insighttoolkit5-examples"],
            "truth": "ATROPOS WITH PRIORS (not anatomical): MNI152 2 mm (nilearn) registered to it by ANTs "
            "(affine, then SyN), its brain mask warped (> 0.5) and its CSF/GM/WM maps as priors "
            "(weight 0.25, MRF 0.1); made once by `devset.py --make-itkt1-truth`",
            "obtain": FETCH_COMMAND,
            **({} if mask else {"variant": "no mask: the whole head is given"}),
        },
    )


def make_itkt1_truth(path: Path = ITKT1_TRUTH) -> Path:
    """Write the itkt1 truth (see itkt1's metadata): ANTs registration of MNI152 + Atropos with its priors."""
    os.environ.setdefault("ANTS_RANDOM_SEED", "1")
    import ants
    import nibabel as nib
    from nilearn import datasets

    source = locate("insighttoolkit5-examples", "itkt1")
    fixed = ants.image_read(str(source)).astype("float32")
    with tempfile.TemporaryDirectory() as tmp:
        maps = {
            "t1": datasets.load_mni152_template(resolution=2),
            "mask": datasets.load_mni152_brain_mask(resolution=2),
            "gm": datasets.load_mni152_gm_template(resolution=2),
            "wm": datasets.load_mni152_wm_template(resolution=2),
        }
        for key, img in maps.items():
            nib.save(img, f"{tmp}/{key}.nii.gz")
        moving = ants.image_read(f"{tmp}/t1.nii.gz").astype("float32")
        head = ants.get_mask(fixed, low_thresh=1, cleanup=0)
        affine = ants.registration(
            fixed=fixed,
            moving=moving,
            type_of_transform="Affine",
            aff_metric="mattes",
            aff_random_sampling_rate=0.5,
            random_seed=1,
            mask=head,
            aff_iterations=(2100, 1200, 1200, 100),
            aff_shrink_factors=(6, 4, 2, 1),
            aff_smoothing_sigmas=(3, 2, 1, 0),
        )
        reg = ants.registration(
            fixed=fixed,
            moving=moving,
            type_of_transform="SyNOnly",
            mask=head,
            random_seed=1,
            initial_transform=affine["fwdtransforms"][0],
        )
        warped = {
            k: ants.apply_transforms(
                fixed=fixed,
                moving=ants.image_read(f"{tmp}/{k}.nii.gz").astype("float32"),
                transformlist=reg["fwdtransforms"],
                interpolator="linear",
            ).numpy()
            for k in ("mask", "gm", "wm")
        }
    brain = warped["mask"] > 0.5
    gm, wm = np.clip(warped["gm"], 0, 1), np.clip(warped["wm"], 0, 1)
    priors = [fixed.new_image_like(p.astype("float32")) for p in (np.clip(1 - gm - wm, 0, 1), gm, wm)]
    out = ants.atropos(
        a=fixed, x=fixed.new_image_like(brain.astype("float32")), i=priors, m="[0.1,1x1x1]", c="[5,0]", priorweight=0.25
    )
    truth = np.where(brain, out["segmentation"].numpy(), 0).astype(np.uint8)
    src = nib.load(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(truth, src.affine), path)
    return path


# ---------------------------------------------------------------------------------------------- CT


def read_inv3(path) -> tuple:
    """An InVesalius project (.inv3: a tar.gz with main.plist and matrix.dat) -> (hu (X, Y, Z) int16, spacing, meta)."""
    with tarfile.open(path, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        main = plistlib.load(io.BytesIO(tar.extractfile(members["main.plist"]).read()))
        matrix = main["matrix"]
        raw = tar.extractfile(members[matrix["filename"]]).read()
    data = np.frombuffer(raw, dtype=np.dtype(matrix["dtype"])).reshape(matrix["shape"])  # (Z, Y, X)
    return np.ascontiguousarray(data.transpose(2, 1, 0)), tuple(float(s) for s in main["spacing"]), main


def _ct_volume(name, hu, fov, spacing, mask, meta, variant=None) -> DevVolume:
    body = body_mask(hu, fov)
    truth = ct_truth(hu, body)
    meta = {
        **meta,
        "truth": "THRESHOLD-DERIVED in HU inside the body (in the field of view): air < -500, "
        "soft tissue -500..300, bone >= 300; body = HU > -500 opened by 1 voxel in-plane, "
        "largest component, grown back 2 voxels, holes filled per slice (so lungs and sinuses "
        "are inside it)",
    }
    if variant:
        meta["variant"] = variant
    return DevVolume(
        name,
        hu.astype(np.float32),
        tuple(spacing),
        _affine(spacing),
        truth,
        body if mask else None,
        dict(CT_NAMES),
        meta,
    )


def headct(mask: bool = True, padded: bool = False) -> DevVolume:
    """Head CT (invesalius-examples) in HU, 2x2 in-plane block mean -> 128 x 128 x 108 at 1.91 x 1.91 x 1.5 mm.

    mask=True gives the body; padded=True (no mask) writes -32768 outside a circle of 0.95 x the grid's width
    and on the top PADDED_TOP_SLICES slices, as an int16 scan with a DICOM PixelPaddingValue would hold."""
    raw, spacing, main = read_inv3(locate("invesalius-examples", "cranium"))
    hu = blocks(raw.astype(np.float32), (2, 2, 1)).mean(-1)
    spacing = (spacing[0] * 2, spacing[1] * 2, spacing[2])
    fov = np.ones(hu.shape, bool)
    meta = {
        "kind": "CT head (HU)",
        "package": "invesalius-examples (Debian)",
        "source": f"InVesalius example 'Cranium.inv3' ({main.get('name', '')}), 256 x 256 x 108 at "
        "0.957 x 0.957 x 1.5 mm, 2x2 in-plane block mean",
        "version": _debian_version("invesalius-examples"),
        "licence": LICENCES["invesalius-examples"],
        "obtain": FETCH_COMMAND,
    }
    if padded:
        x, y = np.meshgrid(np.arange(hu.shape[0]), np.arange(hu.shape[1]), indexing="ij")
        c = (np.array(hu.shape[:2]) - 1) / 2
        inside = (x - c[0]) ** 2 + (y - c[1]) ** 2 <= (0.475 * hu.shape[0]) ** 2
        fov = np.repeat(inside[:, :, None], hu.shape[2], axis=2)
        fov[:, :, -PADDED_TOP_SLICES:] = False
        hu = np.where(fov, np.round(hu), PADDED_VALUE).astype(np.int16).astype(np.float32)
        vol = _ct_volume(
            "headct_padded",
            hu,
            fov,
            spacing,
            False,
            meta,
            f"int16, {PADDED_VALUE} (PixelPaddingValue) outside a circular field of view and on the "
            f"top {PADDED_TOP_SLICES} slices; no mask given",
        )
        vol.meta["padding_value"] = PADDED_VALUE
        return vol
    return _ct_volume(
        "headct" + ("" if mask else "_nomask"),
        hu,
        fov,
        spacing,
        mask,
        meta,
        None if mask else "no mask: the whole grid (air, head-rest) is given",
    )


def chestct(mask: bool = True) -> DevVolume:
    """Chest CT (slicerio's CTChest4.nrrd) in HU, 128 x 128 x 34 at 3.05 x 3.05 x 10 mm; -3024 outside the FOV."""
    from importlib import metadata, resources

    import SimpleITK as sitk

    path = resources.files("slicerio") / "data" / "CTChest4.nrrd"
    img = sitk.ReadImage(str(path))
    hu = sitk.GetArrayFromImage(img).transpose(2, 1, 0).astype(np.float32)  # (X, Y, Z)
    padding = float(hu.min())
    fov = hu > padding
    meta = {
        "kind": "CT chest (HU), thick slices",
        "package": "slicerio (PyPI)",
        "version": metadata.version("slicerio"),
        "source": "slicerio/data/CTChest4.nrrd (3D Slicer's CTChest, downsampled), 3.05 x 3.05 x 10 mm, "
        f"{padding:.0f} HU outside the circular field of view",
        "licence": LICENCES["slicerio"],
        "obtain": "pip install slicerio (a dependency)",
        "padding_value": padding,
    }
    return _ct_volume(
        "chestct" + ("" if mask else "_nomask"),
        hu,
        fov,
        img.GetSpacing(),
        mask,
        meta,
        None if mask else f"no mask: padding ({padding:.0f}), air and table are given",
    )


def field_of_view(volume: DevVolume) -> np.ndarray:
    """(X, Y, Z) bool: voxels that are not padding."""
    pad = volume.meta.get("padding_value")
    return np.ones(volume.image.shape, bool) if pad is None else volume.image != pad


def noisy(volume: DevVolume, seed: int = NOISE_SEED) -> DevVolume:
    """A copy with scan artefacts (MR: bias + Rician noise; CT: Gaussian noise + offset field); truth unchanged."""
    if volume.class_names == CT_NAMES:
        image = add_ct_artefacts(volume.image, field_of_view(volume), seed)
        what = f"+ Gaussian noise ({CT_NOISE_HU:.0f} HU) and a smooth offset field (range {CT_OFFSET_HU:.0f} HU)"
    else:
        image = add_scan_artefacts(volume.image, volume.truth, seed)
        what = f"+ bias field (range {MR_BIAS:.0%}) and Rician noise ({MR_NOISE:.0%} of the top class)"
    meta = dict(volume.meta)
    meta["variant"] = "; ".join(v for v in (meta.get("variant"), f"{what}, seed {seed}") if v)
    return replace(volume, name=volume.name + "_noisy", image=image, meta=meta)


VOLUMES: Dict[str, Callable[[], DevVolume]] = {
    "mni1mm": lambda: mni(1),
    "mni2mm": lambda: mni(2),
    "mni4mm": lambda: mni(4),
    "mni2mm_nomask": mni2mm_nomask,
    "colin1mm": lambda: colin(1),
    "colin2mm": lambda: colin(2),
    "colin2mm_nomask": lambda: colin(2, mask=False),
    "itkt1": lambda: itkt1(True),
    "itkt1_nomask": lambda: itkt1(False),
    "headct": lambda: headct(True),
    "headct_nomask": lambda: headct(False),
    "headct_padded": lambda: headct(padded=True),
    "chestct": lambda: chestct(True),
    "chestct_nomask": lambda: chestct(False),
}
# the development set proper: one of each real volume and of each mask situation (mni1mm/colin1mm are larger copies)
DEVSET = (
    "mni2mm",
    "mni2mm_nomask",
    "colin2mm",
    "colin2mm_nomask",
    "itkt1",
    "itkt1_nomask",
    "headct",
    "headct_nomask",
    "headct_padded",
    "chestct",
    "chestct_nomask",
)


def load(name: str) -> DevVolume:
    """A volume of VOLUMES by name, or '<name>_noisy' for its noisy copy."""
    base, noise = (name[: -len("_noisy")], True) if name.endswith("_noisy") else (name, False)
    if base not in VOLUMES:
        raise ValueError(f"unknown development-set volume {name!r}; known: {', '.join(VOLUMES)} (+ '_noisy')")
    volume = VOLUMES[base]()
    return noisy(volume) if noise else volume


# ---------------------------------------------------------------------------------------------- command line


def describe(volume: DevVolume) -> dict:
    sizes = {volume.class_names[k]: int((volume.truth == k).sum()) for k in sorted(volume.class_names)}
    return {
        "name": volume.name,
        "shape": list(volume.image.shape),
        "spacing": [round(s, 3) for s in volume.spacing],
        "mask": volume.mask is not None,
        "range": [float(volume.image.min()), float(volume.image.max())],
        "class_voxels": sizes,
        **volume.meta,
    }


def overview(names, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(names), figsize=(2.6 * len(names), 5.4))
    for col, name in enumerate(names):
        v = load(name)
        z = int(np.flatnonzero(v.roi.any((0, 1))).mean())
        sl = v.image[:, :, z].T
        fov = field_of_view(v)[:, :, z].T
        lo, hi = np.percentile(sl[fov], [1, 99])
        aspect = v.spacing[1] / v.spacing[0]
        axes[0, col].imshow(sl, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect)
        axes[0, col].set_title(name, fontsize=8)
        axes[1, col].imshow(
            np.ma.masked_equal(v.truth[:, :, z].T, 0),
            cmap="viridis",
            vmin=1,
            vmax=3,
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
        )
        axes[1, col].set_title(", ".join(v.class_names.values()), fontsize=7)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--fetch", action="store_true", help=f"apt-get download + dpkg -x the Debian packages into {CACHE}"
    )
    parser.add_argument("--list", action="store_true", help="describe every volume of the set (JSON lines)")
    parser.add_argument("--names", default=",".join(DEVSET), help="volumes for --list / --overview")
    parser.add_argument("--overview", type=Path, metavar="PNG", help="one slice and its truth per volume")
    parser.add_argument("--make-itkt1-truth", action="store_true", help=f"recompute {ITKT1_TRUTH.name} (ANTs; ~30 s)")
    args = parser.parse_args(argv)
    if args.fetch:
        fetch()
    if args.make_itkt1_truth:
        print(make_itkt1_truth())
    names = args.names.split(",")
    if args.list:
        import json

        for name in names:
            print(json.dumps(describe(load(name))), flush=True)
    if args.overview:
        overview(names, args.overview)
        print(args.overview)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The segmentation methods compared, each on a Case with the same mask and number of labels.

Every method sees only ``case.mask`` (what the user would give it: the brain, the body) or, where the case
has none, the whole grid (``case.given_mask``): padding, air and table included. The engine gets the mask,
or ``None``. Dice is then counted inside ``case.roi`` by the caller.

Every method returns a dict with ``labels`` ((X, Y, Z) int, 1..K inside the given mask, 0 outside),
``iterations`` (None where the method has no iteration count) and ``seconds`` (wall time of the
segmentation itself, after data loading and imports); the engine adds its history and the
refinement measurement. Imports are inside the functions so that each child process loads only
the library it measures.
"""

from __future__ import annotations

import time

import numpy as np

UNSUPERVISED = ("engine", "kmeans", "gmm", "otsu", "atropos")
WITH_SCRIBBLES = ("engine", "growcut", "random_walker")


def _put(values: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """(N,) labels of the voxels in ``roi`` -> (X, Y, Z) int32 with 0 outside it."""
    out = np.zeros(roi.shape, np.int32)
    out[roi] = values
    return out


def _by_intensity(labels: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Relabel 0..k-1 cluster ids to 1..k in order of their mean intensity (ids absent stay last)."""
    means = [values[labels == c].mean() if np.any(labels == c) else np.inf for c in range(k)]
    rank = np.empty(k, np.int32)
    rank[np.argsort(means, kind="stable")] = np.arange(1, k + 1)
    return rank[labels]


def kmeans(case, threads: int) -> dict:
    from sklearn.cluster import KMeans

    given = case.given_mask
    values = case.image[given].reshape(-1, 1)
    start = time.perf_counter()
    model = KMeans(n_clusters=case.n_classes, n_init=3, random_state=0).fit(values)
    labels = _put(_by_intensity(model.labels_, values[:, 0], case.n_classes), given)
    return {"labels": labels, "iterations": int(model.n_iter_), "seconds": time.perf_counter() - start}


def gmm(case, threads: int) -> dict:
    from sklearn.mixture import GaussianMixture

    given = case.given_mask
    values = case.image[given].reshape(-1, 1).astype(np.float64)
    start = time.perf_counter()
    model = GaussianMixture(n_components=case.n_classes, random_state=0).fit(values)
    raw = model.predict(values)
    labels = _put(_by_intensity(raw, values[:, 0], case.n_classes), given)
    return {"labels": labels, "iterations": int(model.n_iter_), "seconds": time.perf_counter() - start}


def otsu(case, threads: int) -> dict:
    """SimpleITK multi-Otsu thresholds from the histogram of the given mask's voxels only."""
    import SimpleITK as sitk

    given = case.given_mask
    values = case.image[given].astype(np.float32)
    start = time.perf_counter()
    otsu_filter = sitk.OtsuMultipleThresholdsImageFilter()
    otsu_filter.SetNumberOfThresholds(case.n_classes - 1)
    otsu_filter.SetNumberOfHistogramBins(256)
    otsu_filter.Execute(sitk.GetImageFromArray(values.reshape(1, 1, -1)))
    thresholds = np.array(otsu_filter.GetThresholds())
    labels = _put(np.digitize(values, thresholds) + 1, given)
    return {
        "labels": labels,
        "iterations": None,
        "seconds": time.perf_counter() - start,
        "thresholds": thresholds.tolist(),
    }


def atropos(case, threads: int) -> dict:
    """ANTs Atropos: k-means initialisation + MRF prior (smoothing 0.2, ANTsPy's default, 1-voxel neighbourhood), 5 iterations."""
    import ants

    start = time.perf_counter()
    image = ants.from_numpy(case.image.astype(np.float32), spacing=case.spacing)
    given = case.given_mask
    mask = ants.from_numpy(given.astype(np.float32), spacing=case.spacing)
    out = ants.atropos(a=image, x=mask, i=f"kmeans[{case.n_classes}]", m="[0.2,1x1x1]", c="[5,0]")
    labels = np.where(given, out["segmentation"].numpy().astype(np.int32), 0)
    return {"labels": labels, "iterations": 5, "seconds": time.perf_counter() - start}


def growcut(case, threads: int) -> dict:
    """Slicer's Grow from seeds (itk-growcut FastGrowCut); voxels outside the given mask are masked out."""
    import itk

    given = case.given_mask
    start = time.perf_counter()
    image = itk.image_from_array(np.ascontiguousarray(case.image.transpose(2, 1, 0), dtype=np.float32))
    seeds = itk.image_from_array(np.ascontiguousarray(case.scribbles.transpose(2, 1, 0), dtype=np.uint8))
    outside = itk.image_from_array(np.ascontiguousarray((~given).transpose(2, 1, 0), dtype=np.uint8))
    for im in (image, seeds, outside):
        im.SetSpacing([float(s) for s in case.spacing])
    grow = itk.FastGrowCut[type(image), type(seeds)].New()
    grow.SetInput(image)
    grow.SetSeedImage(seeds)
    grow.SetMaskImage(outside)
    grow.SetNumberOfWorkUnits(threads)
    grow.Update()
    labels = itk.array_from_image(grow.GetOutput()).transpose(2, 1, 0).astype(np.int32)
    return {"labels": np.where(given, labels, 0), "iterations": None, "seconds": time.perf_counter() - start}


def random_walker(case, threads: int) -> dict:
    """scikit-image random walker (beta 130, conjugate gradient with Jacobi preconditioner) inside the given mask."""
    from skimage.segmentation import random_walker as walk

    given = case.given_mask
    start = time.perf_counter()
    markers = np.where(given, case.scribbles, -1)  # -1: outside the given mask, not segmented
    lo, hi = np.percentile(case.image[given], [0.5, 99.5])
    data = np.clip((case.image - lo) / (hi - lo), 0, 1)
    labels = walk(data, markers, beta=130, mode="cg_j", tol=1e-3, spacing=case.spacing)
    return {
        "labels": np.where(given, labels, 0).astype(np.int32),
        "iterations": None,
        "seconds": time.perf_counter() - start,
    }


def engine(case, threads: int, config: dict, refine: bool = True) -> dict:
    """unsupervised_seg with n_labels = number of classes, the case's mask (or None), scribbles when it has them.

    With scribbles and ``refine``: one more stroke of the worst class through its largest error
    (simulated_scribbles.corrective_stroke), then ``Segmenter.fit`` again on the same volume (a refinement);
    its seconds, iterations, Dice and the share of the stroke labelled right go into ``refinement``.
    """
    import torch

    from unsupervised_seg import SegmentationConfig, Segmenter, Volume
    from unsupervised_seg.demo.metrics import hungarian_dice

    cfg = SegmentationConfig(**{"n_labels": case.n_classes, **config})
    volume = Volume.from_array(case.image, case.spacing, affine=case.affine, source=case.name)
    cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    if cuda:  # the CUDA context is made before the clock starts: it is the process's start-up, not the fit's
        torch.zeros(1, device=cfg.device if cfg.device.startswith("cuda") else "cuda")
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    segmenter = Segmenter(cfg)
    result = segmenter.fit(volume, case.scribbles, case.mask)
    seconds = time.perf_counter() - start
    out = {
        "labels": result.labels,
        "iterations": result.iterations,
        "seconds": seconds,
        "stop_reason": result.stop_reason,
        "device": result.device,
        "config": cfg.to_dict(),
        "history": [{k: v for k, v in h.items() if k in ("iteration", "n_labels", "loss")} for h in result.history],
    }
    if cuda:
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    if refine and case.scribbles is not None:
        from unsupervised_seg.demo.simulated_scribbles import corrective_stroke

        per_class = hungarian_dice(result.labels, case.truth, case.roi)["per_class"]
        worst = min(per_class, key=per_class.get)
        more = corrective_stroke(case.scribbles, case.truth, result.labels, case.roi, case.spacing, worst)
        added = (more > 0) & (case.scribbles == 0)
        start = time.perf_counter()
        again = segmenter.fit(volume, more, case.mask)
        refine_seconds = time.perf_counter() - start
        out["refinement"] = {
            "class": int(worst),
            "added_voxels": int(added.sum()),
            "seconds": refine_seconds,
            "iterations": again.iterations,
            "stop_reason": again.stop_reason,
            "time_ratio": refine_seconds / seconds,
            "stroke_correct_before": float(np.mean(result.labels[added] == worst)),
            "stroke_correct_after": float(np.mean(again.labels[added] == worst)),
            "dice": hungarian_dice(again.labels, case.truth, case.roi)["mean"],
        }
    return out


METHODS = {
    "engine": engine,
    "kmeans": kmeans,
    "gmm": gmm,
    "otsu": otsu,
    "atropos": atropos,
    "growcut": growcut,
    "random_walker": random_walker,
}

"""Every hyper-parameter of the engine, with its default. Defaults live only here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional, Tuple

from ..core.errors import InputError

# Defaults that depend on the image (the "None" fields). 2D and 3D share the speed-ups of the 3D tuning on MNI152
# (benchmarks/TUNING.md): fewer response channels, a learning-rate half-life, coarse to fine above a size, and a
# convergence stop. 2D photos keep the reference's start from random weights: an initial clustering of the colours
# into min_labels clusters merged the photo's regions (BSD500 101027: adjusted Rand index against the reference
# code's own result 0.39 with a 3-cluster Gaussian mixture, 0.49-0.54 with 8 clusters, 0.65 without); with n_labels
# (a known number of classes, e.g. tissues on an MRI slice) a Gaussian mixture of that many is the start, as in 3D
# (MNI152 axial slices: Dice 0.69 without, above GMM / KMeans / Otsu with). See benchmarks/RESULTS_2D.md.
DEFAULTS_2D = {
    "n_clusters": 32,
    "init": "none",
    "init_iter": 0,
    "lr_half_life": 25,
    "coarse_voxels": 50_000,
    "coarse_max_spacing": 0.0,
    "coarse_min_changes": 0.0,
    "convergence_tol": 0.005,
    "foreground": "none",
    "upper_percentile": 99.5,
    "head_shrink": 0.0,
}
DEFAULTS_2D_N_LABELS = {"init": "gmm", "init_iter": 100}  # 2D with n_labels set
DEFAULTS_3D = {
    "n_clusters": 32,
    "init": "auto",
    "init_iter": 100,
    "lr_half_life": 25,
    "coarse_voxels": 300_000,
    "coarse_max_spacing": 4.0,
    "coarse_min_changes": 0.07,
    "foreground": "auto",
    "convergence_tol": 0.005,
    "upper_percentile": 99.9,
    "head_shrink": 0.3,
}
# reference_defaults=True: the reference code's settings (Kim, Kanezaki & Tanaka 2020, demo.py), in 2D and 3D:
# 100 channels, random start, constant learning rate, full resolution, no convergence stop (max_iter or min_labels).
REFERENCE_DEFAULTS = {
    "n_clusters": 100,
    "init": "none",
    "init_iter": 0,
    "lr_half_life": 0,
    "coarse_voxels": 0,
    "coarse_max_spacing": 0.0,
    "coarse_min_changes": 0.0,
    "convergence_tol": 0.0,
    "foreground": "none",
    "upper_percentile": 99.5,
    "head_shrink": 0.0,
}


@dataclass
class SegmentationConfig:
    """Hyper-parameters of test-time differentiable feature clustering.

    Names in brackets are the reference code's options (Kim, Kanezaki & Tanaka 2020).
    """

    # network
    n_clusters: Optional[int] = None  # q, upper bound on the number of clusters [nChannel]; None: by dims
    n_conv: int = 2  # conv-ReLU-BN blocks [nConv]
    # loss weights
    sim_weight: float = 1.0  # mu [stepsize_sim]
    con_weight: float = 1.0  # nu [stepsize_con]
    scr_weight: float = 0.5  # lambda [stepsize_scr]
    # in the head's class-balanced scribble loss a class stroked on fewer voxels than this is divided by this, not by
    # its count: each voxel of a 3-voxel stroke weighs 1/25, not 1/3 (a chest CT's one wrong bone voxel at 302 HU
    # moved ~5 k soft-tissue voxels into bone; benchmarks/RESULTS.md); 25: "a few dozen", issue 12's sparse style.
    # (Patch training, the only place strokes reach the network, counts a batch's voxels and keeps 1/count.)
    scr_min_voxels: int = 25
    # initialisation: "kmeans"/"gmm" fit the network to k-means / Gaussian-mixture clusters of the intensities for
    # init_iter iterations before self-training on its own argmax; "auto" fits both and keeps the mixture where it
    # is more spatially coherent (fewer label changes between neighbours) and leaves at most 1.2 times k-means'
    # unexplained intensity variance, else k-means; "none" is the reference method
    init: Optional[str] = None
    init_iter: Optional[int] = None
    init_clusters: Optional[int] = None  # None: n_labels, else min_labels (at least the scribble classes)
    # optimisation
    lr: float = 0.1
    lr_half_life: Optional[float] = None  # iterations over which the learning rate halves (0: constant, the reference)
    momentum: float = 0.9
    max_iter: int = 1000  # [maxIter]
    min_labels: int = 3  # stop when argmax has <= this many labels [minLabels]
    n_labels: Optional[int] = None  # exactly this many output labels (merge most similar clusters)
    # a cluster (not a scribble class) with fewer than this share of the ROI voxels joins the most similar one
    min_cluster_fraction: float = 0.001
    convergence_tol: Optional[float] = None  # fraction of ROI voxels whose label may change ... (0: never)
    convergence_window: int = 10  # ... over this many iterations for the run to count as converged
    # stroke-free head phase: after the network (its crop seen whole) the clustering head self-trains on the
    # cached features until it converges or a label has lost this share of the voxels it had at the phase's
    # start (its continuity term erodes a thin class such as CSF or bone step by step and never converges; a
    # 30 % stop lifted every unsupervised volume of the development set, benchmarks/RESULTS.md). 3D: 0.3; 2D and
    # the reference settings: 0 (no such phase; not measured in 2D). It runs in every new fit, with strokes too
    # (not in a sequence frame, which keeps its labels); the stroke phase then goes on from its head and runs
    # to convergence whatever this is.
    head_shrink: Optional[float] = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # the reference code's settings for every field left unset (REFERENCE_DEFAULTS) instead of the faster defaults
    reference_defaults: bool = False
    # without a mask: "auto" leaves out the background (padding values and the dark region connected to the
    # image border: air around the body, zeros around a brain) and clusters the rest; "none": the whole image
    foreground: Optional[str] = None
    # coarse to fine: a volume whose ROI box holds more voxels than this is fitted at half resolution
    # (recursively) and the network then predicts at full resolution (0: off)
    coarse_voxels: Optional[int] = None
    # ... but an axis is never halved beyond this voxel size (mm; 3D: 4 mm, where MNI152 was tuned; 0: no limit):
    # thick slices are not thickened, thin bone is not averaged away
    coarse_max_spacing: Optional[float] = None
    # ... and only where the initial clustering is noisy: at fewer label changes between neighbours per mm than
    # this (CT) the network trains at full resolution (0: always coarse to fine; see preprocess.training_preps)
    coarse_min_changes: Optional[float] = None
    # large volumes: random patches for training, sliding window for prediction
    max_voxels: int = 2_000_000  # above this many voxels, train on patches
    patch_size: Optional[Tuple[int, ...]] = None  # None: chosen from the memory available
    patch_batch: int = 4
    sw_overlap: float = 0.25
    # intensity normalisation: robust percentiles inside the ROI mapped to [0, 1], clipped; upper None: 99.9 in 3D,
    # which keeps a small bright class such as thin bone on a noisy chest CT (99.5 loses it; benchmarks/RESULTS.md),
    # 99.5 in 2D and in reference mode, where the 2D defaults were measured (benchmarks/RESULTS_2D.md)
    lower_percentile: float = 0.5
    upper_percentile: Optional[float] = None

    def __post_init__(self):

        if self.n_clusters is not None and self.n_clusters < 2:
            raise InputError(f"n_clusters must be >= 2, got {self.n_clusters}")
        if self.n_conv < 1:
            raise InputError(f"n_conv must be >= 1, got {self.n_conv}")
        if self.max_iter < 1:
            raise InputError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.convergence_tol is not None and not 0 <= self.convergence_tol < 1:
            raise InputError(f"convergence_tol must be >= 0 and < 1, got {self.convergence_tol}")
        if self.head_shrink is not None and not 0 <= self.head_shrink < 1:
            raise InputError(f"head_shrink must be >= 0 and < 1, got {self.head_shrink}")
        if self.scr_min_voxels < 1:
            raise InputError(f"scr_min_voxels must be >= 1, got {self.scr_min_voxels}")
        if self.min_labels < 1:
            raise InputError(f"min_labels must be >= 1, got {self.min_labels}")
        if self.n_labels is not None and self.n_labels < 1:
            raise InputError(f"n_labels must be >= 1, got {self.n_labels}")
        if self.n_labels is not None and self.n_labels > (self.n_clusters or 255):
            limit = f"n_clusters ({self.n_clusters})" if self.n_clusters else "255"
            raise InputError(f"n_labels must be at most {limit}, got {self.n_labels}")
        if not 0 <= self.min_cluster_fraction < 1:
            raise InputError(f"min_cluster_fraction must be >= 0 and < 1, got {self.min_cluster_fraction}")
        if not 0 <= self.lower_percentile < (100 if self.upper_percentile is None else self.upper_percentile) <= 100:
            raise InputError(
                f"percentiles must satisfy 0 <= lower < upper <= 100, got {self.lower_percentile} and "
                f"{self.upper_percentile}"
            )
        if self.init not in (None, "auto", "kmeans", "gmm", "none"):
            raise InputError(f"init must be 'auto', 'kmeans', 'gmm' or 'none', got {self.init!r}")
        if self.foreground not in (None, "auto", "none"):
            raise InputError(f"foreground must be 'auto' or 'none', got {self.foreground!r}")
        if self.patch_size is not None:
            self.patch_size = tuple(int(p) for p in self.patch_size)

    def resolved(self, spatial_dims: int) -> SegmentationConfig:
        """A copy with the defaults for the image's dimensions (or the reference's) filled into the None fields."""
        if self.reference_defaults:
            defaults = REFERENCE_DEFAULTS
        elif spatial_dims == 2:
            defaults = {**DEFAULTS_2D, **(DEFAULTS_2D_N_LABELS if self.n_labels is not None else {})}
        else:
            defaults = DEFAULTS_3D
        return self.replace(**{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def replace(self, **changes) -> SegmentationConfig:
        """A copy with some fields changed (unknown names raise InputError)."""

        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise InputError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        values = asdict(self)
        values.update(changes)
        return SegmentationConfig(**values)

    def to_dict(self) -> dict:
        return asdict(self)

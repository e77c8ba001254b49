"""Model files: an explicit, versioned state of tensors and plain values, read with ``weights_only=True``.

A model file from a colleague or a download is untrusted: loading one must never run code. Pickled
objects are therefore refused (torch's weights-only unpickler raises before anything is built), and a
file of another format or version gets one clear error.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..core.errors import InputError
from .network import ClusteringNet
from .preprocess import Prepared
from .refine import RefineCache

FORMAT = "unsupervised-seg-model"
VERSION = 1


def _prepared_state(prep: Prepared) -> dict:
    return {
        "image": prep.image,
        "scribbles": prep.scribbles,
        "roi": prep.roi,
        "targets": prep.targets,
        "crop": [[s.start, s.stop] for s in prep.crop],
        "full_shape": list(prep.full_shape),
        "full_roi": torch.from_numpy(np.ascontiguousarray(prep.full_roi)),
        "spacing": list(prep.spacing),
        "n_scribble_classes": prep.n_scribble_classes,
    }


def _prepared(state: dict) -> Prepared:
    return Prepared(
        state["image"],
        state["scribbles"],
        state["roi"],
        state["targets"],
        tuple(slice(a, b) for a, b in state["crop"]),
        tuple(state["full_shape"]),
        state["full_roi"].numpy(),
        tuple(state["spacing"]),
        int(state["n_scribble_classes"]),
    )


def cache_state(cache: Optional[RefineCache]) -> Optional[dict]:
    if cache is None:
        return None
    return {
        "key": cache.key,
        "level": cache.level,
        "train": _prepared_state(cache.train),
        "full": _prepared_state(cache.full),
        "full_features": cache.full_features,
    }


def cache_from_state(state: Optional[dict]) -> Optional[RefineCache]:
    """The refinement cache of a model file; None if it has none. The network's head that earlier files kept
    as "head_start" (for strokes to restart from) is ignored: strokes go on from the saved head."""
    if state is None:
        return None
    return RefineCache(
        state["key"], int(state["level"]), _prepared(state["train"]), _prepared(state["full"]), state["full_features"]
    )


def segmenter_state(seg) -> dict:
    """The state of a fitted Segmenter: config, network shape and weights, optimiser, label mapping, steps done,
    refinement cache; tensors and plain values only."""
    return {
        "config": seg.config.to_dict(),
        "network": seg.network.hyper_parameters(),
        "state_dict": seg.network.state_dict(),
        "optimizer": seg.optimizer.state_dict(),
        "channel_to_label": torch.from_numpy(np.asarray(seg.channel_to_label, np.int64)),
        "iterations_done": seg.iterations_done,
        "refine_cache": cache_state(seg._cache),
    }


def restore(seg, state: dict) -> None:
    """Put a ``segmenter_state`` back into a new Segmenter made with the saved config."""
    seg.network = ClusteringNet(**state["network"]).to(seg.device)
    seg.network.load_state_dict(state["state_dict"])
    seg.optimizer = torch.optim.SGD(seg.network.parameters(), lr=seg.config.lr, momentum=seg.config.momentum)
    seg.optimizer.load_state_dict(state["optimizer"])
    seg.channel_to_label = state["channel_to_label"].numpy()
    seg.iterations_done = int(state["iterations_done"])
    seg._cache = cache_from_state(state.get("refine_cache"))


def write_state(state: dict, path) -> None:
    """Write ``state`` (tensors and plain values only) with its format tag and version.

    torch reports a failed write (a full disk) as a RuntimeError of its zip writer; it is raised as the
    OSError it is, so that the caller's atomic_output names the output file and leaves no partial file."""
    try:
        torch.save({"format": FORMAT, "version": VERSION, **state}, path)
    except RuntimeError as exc:
        raise OSError(f"the write failed; is the disk full? (torch: {' '.join(str(exc).split())[:160]})") from None


def read_state(path) -> dict:
    """Read a model file written by ``write_state``; InputError (naming ``path``) for anything else."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError("no such model file", path) from None
    except Exception as exc:  # pickled objects, corrupt or truncated files
        text = " ".join(str(exc).split())
        if "weights_only" in text or "Unsupported global" in text or "Weights only load failed" in text:
            raise InputError(
                "refused: the file holds Python objects, not just tensors and plain values (an old "
                "UnsupervisedSeg model or a foreign file; nothing in it was run)",
                path,
            ) from None
        raise InputError(f"not a saved UnsupervisedSeg model ({exc.__class__.__name__}: {text[:200]})", path) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError("not a saved UnsupervisedSeg model (no format tag)", path)
    if state.get("version") != VERSION:
        raise InputError(
            f"model file version {state.get('version')} is not supported (this engine reads "
            f"version {VERSION}); refit the model with this version",
            path,
        )
    return state

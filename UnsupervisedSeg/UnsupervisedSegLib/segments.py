"""Scribble segments in, named and coloured result segments out, and the voxel grids they live on.

numpy is imported inside the functions that need it; the engine never.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

# Colour of a result segment whose colour the result file does not give (the engine's file always does).
FALLBACK_COLOR = (0.5, 0.5, 0.5)


def cluster_name(label: int) -> str:
    """Name of an output segment that no scribble segment asked for."""
    return f"Cluster {int(label)}"


def scribble_classes(segments: Sequence[Tuple[str, Sequence[float]]]
                     ) -> Tuple[Dict[int, str], Dict[int, tuple]]:
    """Class tables from the scribble segments, in the order they are exported to the label map.

    ``segments`` is [(name, (r, g, b) 0..1), ...]; segment i becomes class i + 1 (the label value
    ``ExportSegmentsToLabelmapNode`` gives the i-th segment ID it is passed).
    Returns (class_names {k: name}, class_colors {k: (r, g, b)}).
    """
    names, colors = {}, {}
    for index, (name, color) in enumerate(segments, start=1):
        names[index] = str(name)
        colors[index] = tuple(float(c) for c in tuple(color)[:3])
    return names, colors


def compact_scribbles(labels, class_names: Mapping[int, str], class_colors: Mapping[int, tuple]):
    """Drop scribble classes whose segment is empty and renumber the rest 1..K in order.

    ``labels``: (*spatial) integer label map (0 = unlabelled). A segment the user created but did
    not paint would otherwise become a class with no voxel. Returns (labels, class_names,
    class_colors), renumbered; raises ValueError if no class has any voxel.
    """
    import numpy as np

    labels = np.asarray(labels)
    present = [k for k in sorted(class_names) if np.any(labels == k)]
    if not present:
        raise ValueError("the scribble segments are empty: paint at least one segment")
    lookup = np.zeros(max(int(labels.max()), max(class_names)) + 1, dtype=np.int32)
    for new, old in enumerate(present, start=1):
        lookup[old] = new
    compacted = lookup[np.clip(labels, 0, None).astype(np.int64)].astype(np.int16)
    names = {new: class_names[old] for new, old in enumerate(present, start=1)}
    colors = {new: class_colors[old] for new, old in enumerate(present, start=1) if old in class_colors}
    return compacted, names, colors


def result_segments(in_file: Union[Mapping[int, Optional[Sequence[float]]], Iterable[int]],
                    class_names: Optional[Mapping[int, str]] = None,
                    class_colors: Optional[Mapping[int, tuple]] = None) -> List[dict]:
    """The segments the module shows for a result: [{"value", "name", "color"}] per label, in label order.

    ``in_file``: the label values Slicer read from the engine's .seg.nrrd, as {value: (r, g, b) the
    file gives, or None} (or just the values). Label k of a scribble class k keeps the scribble
    segment's name and colour; every other cluster is "Cluster k" in the colour the file gives it
    (the engine's palette). Label 0 (background) is never a segment.
    """
    file_colors = dict(in_file) if isinstance(in_file, Mapping) else {value: None for value in in_file}
    class_names, class_colors = dict(class_names or {}), dict(class_colors or {})
    table = []
    for value in sorted({int(v) for v in file_colors if int(v) != 0}):
        color = class_colors.get(value) or file_colors.get(value) or FALLBACK_COLOR
        table.append({"value": value, "name": class_names.get(value, cluster_name(value)),
                      "color": tuple(float(c) for c in tuple(color)[:3])})
    return table


def same_grid(shape_a: Sequence[int], ijk_to_world_a, shape_b: Sequence[int], ijk_to_world_b,
              tolerance: float = 1e-3) -> bool:
    """Whether two volumes share a voxel grid: same shape and IJK-to-world matrices (4x4, with any
    parent transforms applied) equal within ``tolerance`` mm. Extra channels must share the input
    volume's grid: their voxels are stacked one to one."""
    import numpy as np

    if tuple(int(s) for s in shape_a) != tuple(int(s) for s in shape_b):
        return False
    return bool(np.allclose(np.asarray(ijk_to_world_a, float), np.asarray(ijk_to_world_b, float), atol=tolerance))


def stack_channels(arrays: Sequence):
    """One (K, J, I, C) float32 array from C volumes' (K, J, I) arrays on one grid: the input
    volume first, then the extra channels (written as one vector NRRD, read back as channels)."""
    import numpy as np

    arrays = [np.asarray(a) for a in arrays]
    shapes = {a.shape for a in arrays}
    if not arrays or len(shapes) != 1 or arrays[0].ndim != 3:
        raise ValueError(f"channels must be 3D arrays of one shape, got {[a.shape for a in arrays]}")
    return np.stack(arrays, axis=-1).astype(np.float32)

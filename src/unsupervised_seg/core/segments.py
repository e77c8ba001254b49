"""Names and colours of output segments, shared by every writer and face (seg.nrrd, DICOM SEG, Slicer)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

# Distinguishable colours (RGB 0..1) for labels 1, 2, ...; cycles past the end.
PALETTE = [
    (0.90, 0.10, 0.10),
    (0.10, 0.60, 0.90),
    (0.95, 0.80, 0.10),
    (0.20, 0.75, 0.30),
    (0.60, 0.30, 0.80),
    (1.00, 0.55, 0.10),
    (0.10, 0.80, 0.75),
    (0.95, 0.45, 0.70),
    (0.55, 0.40, 0.20),
    (0.50, 0.50, 0.50),
    (0.70, 0.90, 0.30),
    (0.20, 0.30, 0.70),
]


def label_color(label: int) -> tuple:
    """RGB (0..1) colour of output label ``label`` (>= 1)."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def segment_name(label: int, class_names: Optional[Dict[int, str]] = None) -> str:
    """The user's class name for a scribble class, else "Cluster k"."""
    if class_names and int(label) in class_names:
        return class_names[int(label)]
    return f"Cluster {int(label)}"


def segment_table(
    labels_present: Sequence[int],
    class_names: Optional[Dict[int, str]] = None,
    class_colors: Optional[Dict[int, tuple]] = None,
) -> List[dict]:
    """One entry per non-zero label: {"value", "name", "color"}, in label order.

    class_colors overrides the palette for given labels (e.g. the colours of the user's scribble segments).
    """
    table = []
    for label in sorted({int(v) for v in labels_present if int(v) != 0}):
        color = (class_colors or {}).get(label, label_color(label))
        table.append({"value": label, "name": segment_name(label, class_names), "color": tuple(color)})
    return table

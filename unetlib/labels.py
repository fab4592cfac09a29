"""The six HipMRI labels, their display colours and the image geometry every slice is brought to."""

from __future__ import annotations

__all__ = ["LABELS", "NUM_CLASSES", "BODY", "BLADDER", "PROSTATE", "SLICE_SHAPE", "LABEL_COLOURS"]

LABELS: tuple[str, ...] = ("background", "body", "bone", "bladder", "rectum", "prostate")
"""Class names; a label map stores the index of its class name (0..5)."""

NUM_CLASSES: int = len(LABELS)

BODY: int = LABELS.index("body")
BLADDER: int = LABELS.index("bladder")
PROSTATE: int = LABELS.index("prostate")
"""The label the course criterion is judged on."""

SLICE_SHAPE: tuple[int, int] = (256, 128)
"""Every slice is centre-cropped or padded to this shape (the real dataset's common shape)."""

LABEL_COLOURS: dict[str, str] = {
    "background": "#00000000",
    "body": "#f2c14e",
    "bone": "#2ec4b6",
    "bladder": "#3a86ff",
    "rectum": "#8f5a3c",
    "prostate": "#ff006e",
}
"""One colour per class for overlays and legends (background transparent)."""

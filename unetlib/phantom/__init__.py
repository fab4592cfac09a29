"""A synthetic pelvic MRI phantom written in the real HipMRI layout.

Nobody has the real dataset by default, so the kit ships a generator for a stand-in that is
laid out, named, shaped and stored like it — ``keras_slices_*`` folders, ``case_…``/``seg_…``
NIfTI slices of 256×128 (one case-week 256×144, some files with a trailing singleton axis),
masks as floats holding 0..5, 60 consecutive slices per case-week — and that is hard in the
ways the real data is.

The phantom is built in three steps, one module each:

* :mod:`~unetlib.phantom.anatomy` — a 3D male pelvis in millimetres per case and week
  (body habitus, bones, muscles, fat, bladder, rectum, prostate with its zones, seminal
  vesicles, vessels, bowel), the true organ shapes and a rater's contours of them;
* :mod:`~unetlib.phantom.appearance` — its T2-weighted MR image;
* :mod:`~unetlib.phantom.dataset` — the real geometry (spacing, axis directions, which 60
  coronal slices are exported) and the files on disk;

and :mod:`~unetlib.phantom.statistics` compares its labels with the real data's figures.

Every case-week is drawn from random streams derived from ``(seed, case, week)``, so the
same seed writes the same bytes whatever the number of worker processes.
"""

from unetlib.phantom.dataset import (
    ODD_CASE,
    ODD_HEIGHT,
    ODD_WEEK,
    SIZES,
    SLICES_PER_VOLUME,
    PhantomSize,
    generate_phantom,
    render_case_week,
)

__all__ = [
    "ODD_CASE",
    "ODD_HEIGHT",
    "ODD_WEEK",
    "SIZES",
    "SLICES_PER_VOLUME",
    "PhantomSize",
    "generate_phantom",
    "render_case_week",
]

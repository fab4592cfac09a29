"""unetlib: 2D UNet segmentation of pelvic MRI slices (HipMRI prostate study), for teaching and for use.

The package is laid out the way data flows: ``phantom`` writes a synthetic dataset in the real
HipMRI layout, ``data`` finds, reads, validates and caches slices, ``pipeline`` feeds them to
TensorFlow, ``model``/``losses``/``metrics`` define the network and how it is judged,
``training``/``evaluation``/``prediction`` run it, ``viz`` draws it, and ``cli`` exposes it all.
"""

from unetlib.labels import LABELS, NUM_CLASSES, PROSTATE, SLICE_SHAPE

__version__ = "0.1.0"
__all__ = ["LABELS", "NUM_CLASSES", "PROSTATE", "SLICE_SHAPE", "__version__"]

"""unetlib: 2D UNet segmentation of pelvic MRI slices (HipMRI prostate study), for teaching and for use.

The package is laid out the way data flows: ``phantom`` writes a synthetic dataset in the real
HipMRI layout, ``data`` finds, reads, validates and caches slices, ``pipeline`` feeds them to
TensorFlow, ``model``/``losses``/``metrics`` define the network and how it is judged,
``training``/``evaluation``/``prediction`` run it, ``viz`` draws it, and ``cli`` exposes it all.
"""

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing on a CPU machine, oneDNN notices) is noise
# for a learner; keep it out of notebooks and terminals unless the user asked for it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from unetlib.labels import LABELS, NUM_CLASSES, PROSTATE, SLICE_SHAPE  # noqa: E402

__version__ = "0.1.0"
__all__ = ["LABELS", "NUM_CLASSES", "PROSTATE", "SLICE_SHAPE", "__version__"]

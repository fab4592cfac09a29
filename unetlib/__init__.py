"""unetlib: 2D UNet segmentation of pelvic MRI slices (HipMRI prostate study), for teaching and for use.

The package is laid out the way data flows: ``phantom`` writes a synthetic dataset in the real
HipMRI layout, ``data`` finds, reads, validates and caches slices, ``pipeline`` feeds them to
TensorFlow, ``model``/``losses``/``metrics`` define the network and how it is judged,
``training``/``evaluation``/``prediction`` run it, ``viz`` draws it, and ``cli`` exposes it all.
"""

import os as _os
import sys as _sys
import warnings as _warnings

# TensorFlow reads these when it is first imported, so they are set here, before any unetlib
# module can import it: oneDNN kernels on (on an AVX2-only CPU they train our UNet about twice
# as fast; TensorFlow enables them by itself only on newer CPUs) and its C++ log chatter off.
# An explicit setting in the environment wins.
_onednn_chosen = "TF_ENABLE_ONEDNN_OPTS" in _os.environ
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "tensorflow" in _sys.modules and not _onednn_chosen:
    _warnings.warn(
        "TensorFlow (or Keras) was imported before unetlib, so unetlib could not switch on its oneDNN "
        "CPU kernels; on CPUs without AVX-512 training may run about 2x slower. Import unetlib first, "
        "or set TF_ENABLE_ONEDNN_OPTS=1 before starting Python.",
        RuntimeWarning,
        stacklevel=2,
    )

from unetlib.labels import LABELS, NUM_CLASSES, PROSTATE, SLICE_SHAPE  # noqa: E402

__version__ = "0.1.0"
__all__ = ["LABELS", "NUM_CLASSES", "PROSTATE", "SLICE_SHAPE", "__version__"]

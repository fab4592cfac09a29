"""Load TensorFlow (Keras' backend here) once, without its C++ start-up chatter.

On a CPU-only machine TensorFlow prints CUDA probing and oneDNN notices straight to the
process's stderr, below Python, where a notebook shows them in whatever cell first imports
it. Modules that need Keras import this module first; the messages are dropped, while
Python exceptions from the import still propagate as usual.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    try:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no usable file descriptors (unusual embedding): import normally
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        import tensorflow

        tensorflow.config.list_physical_devices()  # device probing logs too: do it while quiet
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()

"""Load TensorFlow (Keras' backend here) once, quietly and with fast CPU kernels, and say
which compute precision this machine runs best.

Modules that need Keras import this module first. Two things happen here:

* TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices), which it prints straight
  to the process's stderr where a notebook shows it in whatever cell first imports it, is
  dropped; Python exceptions from the import still propagate as usual.
* :func:`default_precision` picks ``mixed_bfloat16`` only where the hardware computes in
  bfloat16 natively, and float32 elsewhere (where bfloat16 is emulated and gains nothing).

The environment TensorFlow reads at import (oneDNN kernels on, log level) is set earlier, in
``unetlib/__init__.py``, which runs before this or any other unetlib module (``python -m benchmarks.bench``
measures what oneDNN gives: "oneDNN off / on").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["NATIVE_BFLOAT16_CPU_FLAGS", "cpu_flags", "native_bfloat16", "default_precision", "resolve_precision"]

NATIVE_BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""``/proc/cpuinfo`` flags of CPUs with bfloat16 arithmetic in hardware (Intel Cooper Lake and
later, AMD Zen 4 and later)."""


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


def cpu_flags(cpuinfo: Path | str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags listed in ``cpuinfo`` (empty where there is no such file).

    Args:
        cpuinfo: a text file in the format of ``/proc/cpuinfo``; its first ``flags`` (x86) or
            ``Features`` (ARM) line is read.

    Returns:
        The flags as lower-case names, e.g. ``{"avx2", "avx512_bf16", ...}``.
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):  # x86 / ARM spelling
            return set(line.split(":", 1)[1].split())
    return set()


def native_bfloat16(cpuinfo: Path | str = "/proc/cpuinfo") -> bool:
    """True when this machine computes bfloat16 in hardware.

    A visible GPU of compute capability 8.0 or later (Ampere, Hopper, ...) counts; otherwise
    the CPU must list one of :data:`NATIVE_BFLOAT16_CPU_FLAGS` in ``cpuinfo``.

    Args:
        cpuinfo: the CPU description file to read the flags from (see :func:`cpu_flags`).
    """
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        if tuple(capability) >= (8, 0):
            return True
    return bool(cpu_flags(cpuinfo) & set(NATIVE_BFLOAT16_CPU_FLAGS))


def default_precision(cpuinfo: Path | str = "/proc/cpuinfo") -> str:
    """``"mixed_bfloat16"`` where bfloat16 is native (see :func:`native_bfloat16`), else ``"float32"``.

    Args:
        cpuinfo: the CPU description file to read the flags from (see :func:`cpu_flags`).
    """
    return "mixed_bfloat16" if native_bfloat16(cpuinfo) else "float32"


def resolve_precision(precision: str) -> str:
    """A config's precision with ``"auto"`` replaced by :func:`default_precision`.

    Args:
        precision: ``"auto"``, ``"float32"`` or ``"mixed_bfloat16"`` (a :class:`~unetlib.config.Config`'s
            ``precision``); values other than ``"auto"`` are returned unchanged.

    Returns:
        ``"float32"`` or ``"mixed_bfloat16"``, a Keras dtype policy name.
    """
    return default_precision() if precision == "auto" else precision

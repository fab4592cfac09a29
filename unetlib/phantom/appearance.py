"""T2-weighted MR appearance of a tissue map: brightness, texture, partial volume, bias
field, motion ghosts and Rician noise.

On T2-weighted images urine is brightest, fat bright and muscle dark; the prostate's
peripheral zone is bright and wraps the back and sides of a darker, nodular transition zone;
the anterior fibromuscular stroma and the capsule are dark, the periprostatic venous plexus
bright; gas and cortical bone give no signal and fatty marrow is intermediate to bright
(``data/README.md`` gives the sources and the measured values). The prostate still meets
structures of much its own brightness — the bladder wall at its base, the rectal wall
behind, the pelvic-floor muscles at its apex — where only shape and context separate them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from unetlib.phantom.anatomy import TISSUES

T2_INTENSITY: dict[str, tuple[float, float]] = {
    # tissue: (brightness relative to urine, texture: relative spread of fine structure)
    "air": (0.0, 0.0),
    "fat": (0.70, 0.06),
    "muscle": (0.22, 0.10),
    "cortex": (0.03, 0.20),
    "marrow": (0.55, 0.12),
    "urine": (1.0, 0.02),
    "bladder_wall": (0.22, 0.08),
    "rectal_wall": (0.22, 0.08),
    "mucus": (0.55, 0.10),
    "stool": (0.42, 0.30),
    "gas": (0.02, 0.20),
    "peripheral_zone": (0.60, 0.10),  # drawn per case as the transition zone's times a ratio
    "transition_zone": (0.32, 0.16),
    "central_zone": (0.27, 0.10),
    "stroma": (0.16, 0.08),
    "capsule": (0.14, 0.05),
    "nodule_dark": (0.26, 0.10),
    "nodule_bright": (0.58, 0.12),
    "lesion": (0.27, 0.08),
    "urethra": (0.45, 0.05),
    "seminal_fluid": (0.80, 0.22),
    "artery": (0.05, 0.10),
    "vein": (0.70, 0.15),
    "bowel_wall": (0.30, 0.10),
    "bowel_fluid": (0.90, 0.05),
    "erectile": (0.72, 0.12),
    "venous_plexus": (0.80, 0.15),
    "cartilage": (0.30, 0.08),
}
assert set(T2_INTENSITY) == set(TISSUES), "every tissue needs a T2 brightness"

ZONAL_RATIO_MEDIAN, ZONAL_RATIO_RANGE = 2.1, (1.5, 2.6)
"""Peripheral over transition zone brightness in most men (before gamma, partial volume, texture
and noise, which bring the measured ratio to about 1.3-2.5; ``data/README.md``)."""
FLAT_ZONES_SHARE, FLAT_ZONES_RANGE = 0.3, (1.0, 1.5)
"""The minority of patients whose peripheral zone has lost much of its brightness (hormone
therapy, which many men receive with radiotherapy; prostatitis; radiotherapy itself), and
their ratio."""


def zonal_ratio(rng: np.random.Generator) -> float:
    """Peripheral/transition zone brightness of one patient (see :data:`ZONAL_RATIO_MEDIAN`)."""
    if rng.random() < FLAT_ZONES_SHARE:
        return float(rng.uniform(*FLAT_ZONES_RANGE))
    return float(np.clip(ZONAL_RATIO_MEDIAN * np.exp(rng.normal(0.0, 0.17)), *ZONAL_RATIO_RANGE))


PARTIAL_VOLUME_SIGMA = 0.6
"""Blur (voxels) standing in for the scanner's point-spread function: borders mix tissues."""


def t2_image(
    tissue: np.ndarray,
    rng: np.random.Generator,
    axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray],
    zones: float = ZONAL_RATIO_MEDIAN,
) -> np.ndarray:
    """The magnitude image (float32, arbitrary scanner units) of a 3D tissue map.

    ``axes_mm`` are the block's coordinates along its three axes (for the bias field); ``zones``
    is the patient's peripheral/transition zone ratio (:func:`zonal_ratio`). Per case-week:
    every tissue's brightness varies by ±12% (scanners and coils differ), the peripheral zone
    is the transition zone's times ``zones``, the contrast varies by a gamma of 0.8-1.25, a
    smooth bias field of up to about ±30% darkens the middle of the body (the receive coils
    sit on the skin) or one side, one in four
    volumes carries faint motion ghosts along the left-right axis, and Rician noise at a
    signal-to-noise ratio of about 20-50 sits on an overall scale of 200-1200.
    """
    brightness = np.array([T2_INTENSITY[name][0] for name in TISSUES], dtype=np.float32)
    brightness *= rng.uniform(0.88, 1.12, len(TISSUES)).astype(np.float32)
    brightness[TISSUES.index("peripheral_zone")] = brightness[TISSUES.index("transition_zone")] * zones
    texture = np.array([T2_INTENSITY[name][1] for name in TISSUES], dtype=np.float32)

    fine = ndimage.gaussian_filter(rng.standard_normal(tissue.shape, dtype=np.float32), 0.8)
    coarse = ndimage.gaussian_filter(rng.standard_normal(tissue.shape, dtype=np.float32), 3.0)
    grain = fine / fine.std() + coarse / coarse.std()
    image = brightness[tissue] * (1.0 + 0.7 * texture[tissue] * grain)
    image = np.maximum(ndimage.gaussian_filter(image, PARTIAL_VOLUME_SIGMA), 0.0)  # strong texture can dip below 0
    image = image ** rng.uniform(0.8, 1.25)  # scans differ in contrast, not only in brightness

    x, y, z = (axis / 200.0 for axis in axes_mm)
    linear = rng.normal(0.0, 0.12, 3)
    surface = rng.uniform(0.0, 0.5)  # receive coils on the skin: the middle of the body is darker
    bias = np.exp(
        linear[0] * x[:, None, None]
        + linear[1] * y[None, :, None]
        + linear[2] * z[None, None, :]
        + surface * (x[:, None, None] ** 2 + y[None, :, None] ** 2)
    )
    image *= bias.astype(np.float32)

    if rng.random() < 0.25:  # breathing or bowel motion: faint copies along the phase direction
        strength, shift = rng.uniform(0.03, 0.08), int(rng.integers(25, 60))
        image = image + strength * (np.roll(image, shift, axis=0) + np.roll(image, -shift, axis=0))

    scale = rng.uniform(200, 1200)
    noise = scale * rng.uniform(0.02, 0.045)
    real = image * scale + noise * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = noise * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary).astype(np.float32)

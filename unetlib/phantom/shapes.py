"""Approximate signed distances (mm, negative inside) of the few shapes the pelvis is built from.

Each function takes coordinate arrays ``x, y, z`` (any broadcastable shapes, in millimetres)
and returns the distance to the shape's surface, to first order: exact on the surface and
close to it, which is where it matters (partial volume, a contour drawn a millimetre
outside). Organs are unions (``np.minimum``) and differences (``np.maximum(a, -b)``) of
these shapes.
"""

from __future__ import annotations

import numpy as np

Point = tuple[float, float, float]


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation matrix (radians) about z (yaw), then x (pitch), then y (roll)."""
    cz, sz, cx, sx, cy, sy = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    about_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    about_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return about_y @ about_x @ about_z


def ellipsoid(x, y, z, centre: Point, radii: Point, turn: np.ndarray | None = None) -> np.ndarray:
    """Ellipsoid with semi-axes ``radii``, optionally turned by the rotation matrix ``turn``."""
    px, py, pz = x - centre[0], y - centre[1], z - centre[2]
    if turn is not None:  # express the point in the ellipsoid's own axes
        px, py, pz = (
            turn[0, 0] * px + turn[1, 0] * py + turn[2, 0] * pz,
            turn[0, 1] * px + turn[1, 1] * py + turn[2, 1] * pz,
            turn[0, 2] * px + turn[1, 2] * py + turn[2, 2] * pz,
        )
    a, b, c = radii
    k0 = np.sqrt((px / a) ** 2 + (py / b) ** 2 + (pz / c) ** 2)
    k1 = np.sqrt((px / a**2) ** 2 + (py / b**2) ** 2 + (pz / c**2) ** 2)
    # k0 / k1 is the local scale (between the smallest and largest radius); at the centre it
    # is undefined and the smallest radius is the right depth.
    scale = np.where(k1 > 1e-9, k0 / np.maximum(k1, 1e-9), min(radii))
    return (k0 - 1.0) * scale


def capsule(x, y, z, start: Point, end: Point, radius_start: float, radius_end: float | None = None) -> np.ndarray:
    """A rod from ``start`` to ``end`` with rounded ends, its radius tapering linearly."""
    radius_end = radius_start if radius_end is None else radius_end
    ax, ay, az = start
    bx, by, bz = (end[0] - ax, end[1] - ay, end[2] - az)
    length2 = bx * bx + by * by + bz * bz
    t = np.clip(((x - ax) * bx + (y - ay) * by + (z - az) * bz) / length2, 0.0, 1.0)
    dx, dy, dz = x - ax - t * bx, y - ay - t * by, z - az - t * bz
    return np.sqrt(dx * dx + dy * dy + dz * dz) - (radius_start + t * (radius_end - radius_start))


def cup(x, y, z, centre: Point, inner: float, thickness: float, axis: Point) -> np.ndarray:
    """A spherical shell from radius ``inner`` to ``inner + thickness`` around ``centre``, on the
    side that ``axis`` (a unit vector) points to and a little beyond: a socket, such as the
    acetabulum around the femoral head."""
    px, py, pz = x - centre[0], y - centre[1], z - centre[2]
    radius = np.sqrt(px * px + py * py + pz * pz)
    shell = np.abs(radius - (inner + thickness / 2)) - thickness / 2
    facing = -(px * axis[0] + py * axis[1] + pz * axis[2]) - 0.2 * inner  # rim a little past the equator
    return np.maximum(shell, facing)


def elliptic_tube(x, y, z, heights, centre_x, centre_y, radius_x, radius_y) -> np.ndarray:
    """A tube running along z whose centre and elliptic cross-section follow control points.

    ``heights`` (increasing) are the z of the control points; the tube is closed by flat
    ends at the first and last height.
    """
    cx, cy = np.interp(z, heights, centre_x), np.interp(z, heights, centre_y)
    rx, ry = np.interp(z, heights, radius_x), np.interp(z, heights, radius_y)
    u, v = (x - cx) / rx, (y - cy) / ry
    k0 = np.sqrt(u * u + v * v)
    k1 = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    scale = np.where(k1 > 1e-9, k0 / np.maximum(k1, 1e-9), np.minimum(rx, ry))
    across = (k0 - 1.0) * scale
    return np.maximum(across, np.maximum(heights[0] - z, z - heights[-1]))


def funnel(x, y, z, heights, radii, centre_y: float, depth_ratio: float, half_thickness: float) -> np.ndarray:
    """A thin funnel-shaped sheet around the z axis (the pelvic floor's levator ani).

    At height ``z`` its cross-section is an ellipse of half-width ``radii(z)`` and half-depth
    ``depth_ratio * radii(z)`` centred on ``(0, centre_y)``.
    """
    radius = np.interp(z, heights, radii)
    across = np.sqrt(x * x + ((y - centre_y) / depth_ratio) ** 2)
    sheet = np.abs(across - radius) - half_thickness
    return np.maximum(sheet, np.maximum(heights[0] - z, z - heights[-1]))


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union of two shapes with the seam rounded over about ``k`` mm (e.g. thighs and pelvis)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


class SmoothField:
    """A smooth random scalar field (a sum of plane waves) with unit standard deviation.

    Used to deform shapes, to make surfaces irregular and to model a rater's hand: cheap to
    evaluate anywhere, and the same field wherever it is evaluated (it is drawn once).
    """

    def __init__(self, rng: np.random.Generator, wavelength: float, waves: int = 6):
        directions = rng.normal(size=(waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        lengths = wavelength * rng.uniform(0.7, 1.4, waves)
        # Python floats keep float32 coordinates in float32 (fast, vectorised sines).
        self.k = (2 * np.pi * directions / lengths[:, None]).tolist()
        self.phase = rng.uniform(0, 2 * np.pi, waves).tolist()
        self.norm = float(np.sqrt(2.0 / waves))
        self.bound = float(self.norm * waves)
        """The largest absolute value the field can take."""

    def __call__(self, x, y, z) -> np.ndarray:
        total = 0.0
        for (kx, ky, kz), phase in zip(self.k, self.phase):
            total = total + np.sin(kx * x + ky * y + kz * z + phase)
        return np.asarray(total * self.norm, dtype=np.float32)

"""A 3D male pelvis in millimetres: tissues, the true organ shapes, and a rater's contours.

Frame: origin at the centre of the prostate; ``x`` towards the patient's left, ``y``
posterior, ``z`` superior — the directions of the real volumes' voxel axes (L, P, S).

One :class:`Pelvis` is one case at one week. What belongs to the patient (body habitus,
pelvis size, organ sizes and shapes, a smooth random deformation, tissue details) is drawn
from a random stream of ``(seed, case)``; what changes from week to week (bladder filling,
rectal contents, small shifts of the organs and of the patient on the table, a little
extra deformation) from a stream of ``(seed, case, week)``. :meth:`Pelvis.render` evaluates
it on any block of voxels and returns three maps of that block:

* ``tissue``: what is there (fat, muscle, cortex, urine, peripheral zone, gas, …), from
  which :mod:`unetlib.phantom.appearance` makes the MR image;
* ``truth``: the six labels of the true shapes;
* ``mask``: the labels as a human contoured them — the true shapes moved by a per-case
  bias (this rater draws a little outside, that one inside), a smooth wobble of the hand,
  a jitter per axial level (contours are drawn on axial slices) and, for the prostate,
  where the rater put the apex and the base. The masks are what the dataset stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unetlib.labels import LABELS
from unetlib.phantom.shapes import SmoothField, capsule, cup, ellipsoid, elliptic_tube, funnel, rotation, smooth_union

TISSUES: tuple[str, ...] = (
    "air",
    "fat",
    "muscle",
    "cortex",
    "marrow",
    "urine",
    "bladder_wall",
    "rectal_wall",
    "mucus",
    "stool",
    "gas",
    "peripheral_zone",
    "transition_zone",
    "central_zone",
    "stroma",
    "capsule",
    "nodule_dark",
    "nodule_bright",
    "lesion",
    "urethra",
    "seminal_fluid",
    "artery",
    "vein",
    "bowel_wall",
    "bowel_fluid",
    "erectile",
    "venous_plexus",
    "cartilage",
)
"""Every tissue the phantom draws; :data:`unetlib.phantom.appearance.T2_INTENSITY` gives each its brightness."""
TISSUE = {name: index for index, name in enumerate(TISSUES)}

LABELLED = ("body", "bone", "rectum", "bladder", "prostate")
"""The labelled structures in the order they are painted: a later one wins where two meet."""

HIP_JOINT_MM = 2.5
"""Joint space of the hip (both cartilage layers) between the femoral head and its socket."""
BODY_DEPTH, BODY_CENTRE_Y = (80.0, 124.0), 8.0
"""How far the skin of the belly and of the back lie in front of and behind ``BODY_CENTRE_Y``
at habitus 1 (mm)."""

FAR = np.float32(1e4)
"""Distance (mm) standing for 'far outside' where a shape was not evaluated."""


# --------------------------------------------------------------------------- voxel blocks


@dataclass
class Grid:
    """Voxel centres of a block of the volume in the pelvis frame (mm), and where the
    patient's smooth deformation moves them.

    ``x``, ``y``, ``z`` are increasing 1D coordinates of the block's voxels; the deformation
    is stored as three full arrays ``X``, ``Y``, ``Z`` (the position each voxel takes in
    the undeformed model). Each displacement component varies only across the other two
    axes, which keeps the deformation close to volume-preserving; ``margin`` (mm) bounds it.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    warp: tuple | None = None
    margin: float = 2.0
    X: np.ndarray = field(init=False, repr=False)
    Y: np.ndarray = field(init=False, repr=False)
    Z: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        x, y, z = (np.asarray(v, dtype=np.float32) for v in (self.x, self.y, self.z))
        self.x, self.y, self.z = x, y, z
        X, Y, Z = np.meshgrid(x, y, z, indexing="ij", copy=True)
        if self.warp is not None:
            dx, dy, dz = self.warp
            X += dx(0.0, y[:, None], z[None, :])[None]
            Y += dy(x[:, None], 0.0, z[None, :])[:, None]
            Z += dz(x[:, None], y[None, :], 0.0)[:, :, None]
        self.X, self.Y, self.Z = X, Y, Z

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.X.shape

    def box(self, low, high) -> tuple[slice, slice, slice]:
        """Index ranges of the voxels whose deformed position may fall in ``[low, high]`` (mm)."""
        margin = self.margin
        return tuple(
            slice(int(np.searchsorted(axis, lo - margin)), int(np.searchsorted(axis, hi + margin, side="right")))
            for axis, lo, hi in zip((self.x, self.y, self.z), low, high)
        )

    def coords(self, box):
        return self.X[box], self.Y[box], self.Z[box]


def _bounds(centre, radius) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return tuple(c - radius for c in centre), tuple(c + radius for c in centre)


def _segment_bounds(start, end, radius) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (
        tuple(min(a, b) - radius for a, b in zip(start, end)),
        tuple(max(a, b) + radius for a, b in zip(start, end)),
    )


# --------------------------------------------------------------------------- the rater


@dataclass(frozen=True)
class RaterStyle:
    """How far (mm) one contouring session departs from a structure's true surface."""

    bias_mean: float  # the typical rater draws this far outside (+) or inside (-)
    bias_sd: float  # spread of that bias between cases
    wobble: float  # amplitude of a smooth wobble of the hand along the surface
    wobble_wavelength: float
    level_jitter: float  # per axial level (contours are drawn slice by slice)


RATER_STYLES = {
    "body": RaterStyle(0.0, 0.4, 0.6, 60.0, 0.3),
    "bone": RaterStyle(0.3, 0.5, 0.8, 25.0, 0.5),
    "rectum": RaterStyle(0.5, 1.0, 1.1, 25.0, 0.7),
    "bladder": RaterStyle(0.3, 0.8, 1.0, 35.0, 0.5),
    "prostate": RaterStyle(0.0, 1.1, 1.4, 22.0, 0.8),
}
"""Calibrated so that the stored prostate mask agrees with the true gland at Dice ≈ 0.85–0.9,
the level two human observers reach on prostate MRI."""
APEX_BASE_SD = 2.5
"""Spread (mm) of where a rater puts the prostate's apex and base along z."""


# --------------------------------------------------------------------------- the pelvis


class Pelvis:
    """One case at one week. Construct with ``Pelvis(seed, case, week)``; see :meth:`render`."""

    def __init__(self, seed: int, case: int, week: int):
        case_rng = np.random.default_rng([seed, case, 0xA7])
        week_rng = np.random.default_rng([seed, case, week, 0xB8])
        u, n = case_rng.uniform, case_rng.normal

        # Patient: habitus scales the body and its fat, p the bony pelvis.
        self.habitus = float(u(0.85, 1.12))
        self.p = float(u(0.93, 1.07))
        self.bone_offset = n(0, [1.5, 4.0, 5.0])  # the gland's place relative to the bony pelvis varies
        # Depth of the back behind the body's middle: the habitus's, but at least 14 mm of soft
        # tissue over the top of the sacrum.
        self.back = float(max(BODY_DEPTH[1] * self.habitus, 126 * self.p + self.bone_offset[1] + 14 - BODY_CENTRE_Y))
        self.fat = float(u(12, 30) * self.habitus**2)
        self.crotch = float(-58 + n(0, 5))
        self.warp = tuple(SmoothField(case_rng, 120.0, 4) for _ in range(3))
        self.warp_mm = u(3.5, 7.0)

        # Prostate: 20-80 ml, longest across, tilted so the apex points forward and down.
        volume_ml = float(np.clip(np.exp(n(np.log(35), 0.3)), 20, 80))
        ratio = np.array([1.55, 0.72, 1.3]) * u(0.9, 1.1, 3)  # widest across, flattest front to back
        b = (volume_ml * 1000 / (4 / 3 * np.pi * np.prod(ratio))) ** (1 / 3)
        self.prostate_radii = tuple(ratio * b)
        self.prostate_volume_ml = volume_ml
        self.prostate_tilt = rotation(pitch=u(0.0, 0.15), yaw=n(0, 0.05))
        self.prostate_egg = u(0.05, 0.2)  # the base is wider than the apex
        self.prostate_surface = SmoothField(case_rng, 25.0)
        self.prostate_surface_mm = u(1.5, 3.5)
        # Zones: the peripheral and central zones keep about the same volume through life while
        # benign hyperplasia grows the transition zone, so a larger gland is mostly transition zone.
        outer_zones_ml = u(11.0, 17.0)
        self.transition_share = float(np.clip((volume_ml - outer_zones_ml) / volume_ml, 0.2, 0.8))
        self.nodules = [
            (tuple(n(0, [0.35, 0.25, 0.35])), u(0.12, 0.3), bool(case_rng.random() < 0.5))
            for _ in range(case_rng.poisson(1 + 10 * self.transition_share))
        ]  # BPH nodules: offset and radius as fractions of the transition zone, dark (stromal) or bright (glandular)
        self.lesion = (tuple(n([0, 0.55, -0.1], [0.35, 0.1, 0.3])), u(3.5, 8)) if case_rng.random() < 0.5 else None
        self.plexus = [(u(-2.6, -0.4), u(1.2, 2.6)) for _ in range(case_rng.integers(3, 8))]
        self.plexus_mm = u(2.5, 7.0)  # depth of the venous plexus in the fat in front of and beside the gland
        self.plexus_veins = SmoothField(case_rng, 14.0)
        self.capsule_mm = u(0.8, 1.5)

        # Bladder: its usual volume for this patient; the week scales it.
        self.bladder_usual_ml = u(110, 320)
        self.bladder_shape = SmoothField(case_rng, 60.0)
        self.bladder_centre_xy = (n(0, 3), -8 + n(0, 3))

        # Rectum: its path wiggles a little from patient to patient.
        self.rectum_wiggle = n(0, [3, 3, 3, 3, 4, 6, 8])
        self.rectum_path_y = np.array([40, 26, 0, 0, 46, 62, 74]) + n(0, [3, 2, 0, 0, 4, 5, 6])

        self.seminal_vesicles = [(u(28, 38), u(6, 9), u(12, 20)) for _ in range(2)]
        self.bowel = [
            (n([0, -5, 0], [22, 15, 1]), u(11, 19), int(case_rng.integers(0, 3)))
            for _ in range(case_rng.integers(3, 7))
        ]
        self.fat_planes = SmoothField(case_rng, 70.0)
        self.fat_strands = SmoothField(case_rng, 30.0)

        # Rater: this case's contouring bias per structure, the wobble of the hand, and
        # where the apex and base of the prostate were put.
        self.rater_bias = {name: n(style.bias_mean, style.bias_sd) for name, style in RATER_STYLES.items()}
        self.rater_wobble = {
            name: SmoothField(case_rng, style.wobble_wavelength) for name, style in RATER_STYLES.items()
        }
        self.rater_levels = case_rng.normal(size=(len(RATER_STYLES), 512))
        self.apex_base = n(0, APEX_BASE_SD, 2)

        # This week: bladder filling, rectal contents, organ and patient shifts.
        w, wn = week_rng.uniform, week_rng.normal
        self.bladder_ml = float(np.clip(self.bladder_usual_ml * w(0.45, 1.5), 50, 520))
        self.rectal_content = ("empty", "stool", "gas")[int(week_rng.choice(3, p=[0.35, 0.4, 0.25]))]
        self.rectum_radius = {"empty": w(6.5, 8.0), "stool": w(8, 11), "gas": w(9, 12.5)}[self.rectal_content]
        self.prostate_shift = wn(0, [0.8, 1.5, 1.5])
        self.week_warp = tuple(SmoothField(week_rng, 120.0, 3) for _ in range(3))
        self.week_warp_mm = w(0.5, 1.5)
        self.stool_bubbles = [(wn(0, [4, 3, 8]), w(1.5, 4)) for _ in range(week_rng.integers(0, 6))]
        self.bowel_contents = [int(week_rng.integers(0, 3)) for _ in self.bowel]

    # ------------------------------------------------------------------ geometry

    def grid(self, x, y, z) -> Grid:
        """A block of voxels at pelvis-frame coordinates ``x, y, z`` with this patient's deformation."""
        fields = tuple(_Sum(a, self.warp_mm, b, self.week_warp_mm) for a, b in zip(self.warp, self.week_warp))
        return Grid(x, y, z, fields, margin=2.0 + fields[0].bound)

    def _prostate_local(self, x, y, z):
        """Coordinates in the prostate's own (tilted, egg-shaped) frame."""
        sx, sy, sz = self.prostate_shift
        t = self.prostate_tilt
        px, py, pz = x - sx, y - sy, z - sz
        lx = t[0, 0] * px + t[1, 0] * py + t[2, 0] * pz
        ly = t[0, 1] * px + t[1, 1] * py + t[2, 1] * pz
        lz = t[0, 2] * px + t[1, 2] * py + t[2, 2] * pz
        widen = 1.0 + self.prostate_egg * np.clip(lz / self.prostate_radii[2], -1.2, 1.2)
        return lx / widen, ly / widen, lz

    def prostate_distance(self, x, y, z) -> np.ndarray:
        lx, ly, lz = self._prostate_local(x, y, z)
        return ellipsoid(lx, ly, lz, (0, 0, 0), self.prostate_radii) + self.prostate_surface_mm * self.prostate_surface(
            x, y, z
        )

    def rectum_tube(self, shrink: float = 0.0):
        """Arguments of :func:`elliptic_tube` for the rectum (``shrink`` mm thinner: the lumen)."""
        a, b, c = self.prostate_radii
        r = self.rectum_radius
        heights = np.array([-78, -48, -20, 10, 40, 75, 115], dtype=float)
        centre_y = self.rectum_path_y.astype(float)
        centre_y[2] = centre_y[3] = b + self.prostate_shift[1] + r + 1.0
        centre_x = self.rectum_wiggle
        radius_x = np.array([6.5, 8, 1.15 * r, 1.15 * r, 0.95 * r, 9, 8.5]) - shrink
        radius_y = np.array([5.5, 7, r, r, 0.85 * r, 7.5, 7.5]) - shrink
        return heights, centre_x, centre_y, np.maximum(radius_x, 0.8), np.maximum(radius_y, 0.8)

    def bladder_geometry(self):
        """Centre and semi-axes of the bladder this week: it rests on the prostate's base."""
        r = (self.bladder_ml * 1000 / (4 / 3 * np.pi * 1.1 * 1.05 * 0.93)) ** (1 / 3)
        radii = (1.1 * r, 1.05 * r, 0.93 * r)
        c = self.prostate_radii[2]
        centre = (
            self.bladder_centre_xy[0],
            self.bladder_centre_xy[1] + self.prostate_shift[1],
            0.7 * c + 0.85 * r + self.prostate_shift[2],
        )
        return centre, radii

    def bones(self):
        """The bony pelvis and upper femora as (shape, arguments, cortex thickness) triples.

        Sizes follow adult men: femoral heads about 48 mm across, a neck-shaft angle near
        128°, a shaft cortex of about 6 mm. Each hip joint's cartilage is carved out of the
        union by :meth:`hip_joints`; the two pubic bones meet at the symphysis with a disc of
        cartilage between them.
        """
        p, (ox, oy, oz) = self.p, self.bone_offset
        parts = []
        for s in (-1, 1):

            def at(x, y, z, s=s):
                return (s * x * p + ox, y * p + oy, z * p + oz)

            head, radius = self._femoral_head(s)
            parts += [
                ("ellipsoid", (head, (radius,) * 3), 2.0),  # femoral head
                ("capsule", (head, at(121, -3, -6), 14 * p, 16 * p), 3.0),  # neck
                ("ellipsoid", (at(138, 6, -4), (14 * p, 20 * p, 22 * p)), 2.5),  # greater trochanter
                ("capsule", (at(128, 2, -16), at(112, -4, -260), 15 * p, 13 * p), 6.0),  # shaft
                ("ellipsoid", (at(112, 10, -34), (8 * p, 8 * p, 10 * p)), 2.5),  # lesser trochanter
                ("cup", (head, radius + HIP_JOINT_MM, 7 * p, self._acetabular_axis(s)), 2.5),  # acetabulum
                ("capsule", (at(76, 4, 46), at(98, 18, 110), 17 * p, 12 * p), 2.5),  # body of the ilium
                ("ellipsoid", (at(106, 24, 128), (11 * p, 55 * p, 50 * p), rotation(yaw=s * 0.5, roll=-s * 0.35)), 2.5),
                ("capsule", (at(70, 10, 6), at(56, 34, -40), 14 * p, 12 * p), 2.5),  # ischium
                ("ellipsoid", (at(54, 38, -50), (13 * p, 18 * p, 14 * p)), 2.5),  # ischial tuberosity
                ("capsule", (at(70, -18, 14), at(14, -44, 0), 10 * p, 11 * p), 2.5),  # superior pubic ramus
                ("ellipsoid", (at(11, -46, -8), (8 * p, 11 * p, 20 * p)), 2.5),  # body of the pubis
                ("capsule", (at(10, -42, -26), at(52, 28, -50), 7 * p, 7 * p), 2.5),  # inferior pubic ramus
            ]
        parts += [
            ("ellipsoid", ((ox, 88 * p + oy, 70 * p + oz), (52 * p, 22 * p, 70 * p), rotation(pitch=-0.55)), 2.5),
            ("capsule", ((ox, 62 * p + oy, -22 * p + oz), (ox, 80 * p + oy, 20 * p + oz), 7 * p, 10 * p), 2.0),
        ]
        return parts

    def _femoral_head(self, side: int) -> tuple[tuple[float, float, float], float]:
        """Centre (pelvis frame, mm) and radius of the femoral head on ``side`` (-1 right, 1 left)."""
        p, (ox, oy, oz) = self.p, self.bone_offset
        return (side * 88 * p + ox, -8 * p + oy, 24 * p + oz), 24 * p

    @staticmethod
    def _acetabular_axis(side: int) -> tuple[float, float, float]:
        """Direction from the femoral head's centre to the deepest point of its socket:
        medial, a little posterior, mostly superior (the socket opens down and out)."""
        axis = np.array([-0.55 * side, 0.25, 0.8])
        return tuple(axis / np.linalg.norm(axis))

    def hip_joints(self):
        """(head centre, head radius, socket axis) of each hip joint: the joint space is the shell
        of :data:`HIP_JOINT_MM` between the head and its socket."""
        return [(*self._femoral_head(s), self._acetabular_axis(s)) for s in (-1, 1)]

    def landmarks(self) -> dict[str, float]:
        """Where a radiographer's reference points sit in this pelvis's frame (mm): the skin of
        the back at the gland (what lies on the table) and the level of the femoral heads."""
        return {
            "back_y": float(BODY_CENTRE_Y + self.back),
            "femoral_heads_z": self._femoral_head(1)[0][2],
        }

    # ------------------------------------------------------------------ rendering

    def render(self, grid: Grid) -> Scene:
        """Tissues, true labels and the rater's labels of the block ``grid``."""
        scene = Scene(grid)
        self._paint_body(scene)
        self._paint_pelvic_soft_tissue(scene)
        self._paint_bowel_and_vessels(scene)
        self._paint_seminal_vesicles(scene)
        self._paint_bones(scene)  # after the unlabelled tissues, before the labelled organs
        self._paint_rectum(scene)
        self._paint_bladder(scene)
        self._paint_prostate(scene)
        scene.finish_labels(self)
        return scene

    def _paint_body(self, scene: Scene) -> None:
        g, h = scene.grid, self.habitus
        X, Y, Z = g.X, g.Y, g.Z
        profile = np.interp(g.z, [-200, -60, -20, 20, 60, 200], [0.92, 0.96, 1.0, 1.0, 0.93, 0.88])
        # Over the hips the skin is a layer of muscle and fat outside the bony pelvis; front to
        # back the body follows the habitus (the back never closer than 14 mm to the sacrum).
        frame = 150 * self.p + 40 * h
        width = (frame * profile).astype(np.float32)  # along z; the deformation bends the outline
        centre_y = BODY_CENTRE_Y
        depth = np.where(Y > centre_y, self.back, BODY_DEPTH[0] * h).astype(np.float32)  # front, back
        u, v = X / width, (Y - centre_y) / depth
        k0 = np.sqrt(u * u + v * v)
        k1 = np.sqrt((u / width) ** 2 + (v / depth) ** 2)
        trunk = (k0 - 1.0) * np.where(k1 > 1e-9, k0 / np.maximum(k1, 1e-9), depth)
        trunk = np.maximum(trunk, self.crotch - Z)
        thighs = FAR
        for side in (-1, 1):
            spread = 0.44 * frame + 0.25 * np.maximum(self.crotch - Z, 0)
            radius = 0.43 * frame
            thighs = np.minimum(thighs, np.hypot((X - side * spread) / radius, (Y + 5) / (90 * h)) * radius - radius)
        body = smooth_union(trunk, thighs, 30.0).astype(np.float32)
        scene.distance["body"] = body
        scene.tissue[body <= 0] = TISSUE["muscle"]
        scene.tissue[(body <= 0) & (body > -self.fat)] = TISSUE["fat"]
        # Thin, wavy fat planes between muscle groups: where a smooth random field crosses zero.
        muscle = body < -self.fat
        where = np.nonzero(muscle)
        planes = np.abs(self.fat_planes(X[where], Y[where], Z[where])) < 0.035
        scene.tissue[tuple(axis[planes] for axis in where)] = TISSUE["fat"]

    def _paint_pelvic_soft_tissue(self, scene: Scene) -> None:
        p, c = self.p, self.prostate_radii[2]
        scene.add("fat", "ellipsoid", (0, 8, 18), (58 * p, 62, 78))  # fat of the pelvic cavity
        # Fibrous strands and small vessels run through it: thin dark lines where a smooth
        # random field crosses zero.
        box = scene.grid.box((-58 * p, -54, -60), (58 * p, 70, 96))
        fat = scene.tissue[box] == TISSUE["fat"]
        where = np.nonzero(fat)
        coords = (axis[where] for axis in scene.grid.coords(box))
        strands = np.abs(self.fat_strands(*coords)) < 0.06
        scene.tissue[box][tuple(axis[strands] for axis in where)] = TISSUE["muscle"]
        for s in (-1, 1):
            scene.add("fat", "ellipsoid", (s * 36 * p, 30, -48), (17, 30, 24))  # ischioanal fossa
            scene.add("muscle", "ellipsoid", (s * 54 * p, 6, -6), (9, 34, 36))  # obturator internus
            scene.add("muscle", "capsule", (s * 58 * p, -8, 200), (s * 76 * p, -34, 10), 20)  # iliopsoas
            scene.add("muscle", "capsule", (s * 20, 75, 55), (s * 95, 35, 35), 11)  # piriformis
        heights = np.array([-52.0, -30, -5, 15])
        radii = np.array([13.0, 22, 33, 50]) * p
        box = scene.grid.box((-60 * p, -40, -55), (60 * p, 70, 18))
        d = funnel(*scene.grid.coords(box), heights, radii, 14.0, 0.85, 2.5)  # levator ani
        scene.tissue[box][d <= 0] = TISSUE["muscle"]
        scene.add("muscle", "ellipsoid", (0, -3, -c - 9), (8, 8, 9))  # urethral sphincter
        scene.add("erectile", "ellipsoid", (0, -2, -c - 28), (13, 13, 13))  # penile bulb
        for s in (-1, 1):
            scene.add("erectile", "capsule", (s * 11, -30, -c - 30), (s * 15, -70, -c - 10), 9)

    def _paint_bones(self, scene: Scene) -> None:
        g = scene.grid
        bone = np.full(g.shape, FAR, dtype=np.float32)
        marrow = np.full(g.shape, FAR, dtype=np.float32)
        for kind, args, cortex in self.bones():
            if kind == "ellipsoid":
                centre, radii = args[0], args[1]
                box = g.box(*_bounds(centre, max(radii) + 1))
                d = ellipsoid(*g.coords(box), *args)
            elif kind == "cup":
                centre, inner, thickness, _ = args
                box = g.box(*_bounds(centre, inner + thickness + 1))
                d = cup(*g.coords(box), *args)
            else:
                start, end, r0, r1 = args
                box = g.box(*_segment_bounds(start, end, max(r0, r1) + 1))
                d = capsule(*g.coords(box), *args)
            np.minimum(bone[box], d, out=bone[box])
            np.minimum(marrow[box], d + cortex, out=marrow[box])
        joints = []
        for centre, radius, axis in self.hip_joints():  # carve the cartilage between each head and its socket
            box = g.box(*_bounds(centre, radius + HIP_JOINT_MM + 1))
            joint = cup(*g.coords(box), centre, radius, HIP_JOINT_MM, axis)
            np.maximum(bone[box], -joint, out=bone[box])
            np.maximum(marrow[box], 2.0 - joint, out=marrow[box])  # subchondral cortex on both sides
            joints.append((box, joint <= 0))
        scene.distance["bone"] = bone
        scene.tissue[bone <= 0] = TISSUE["cortex"]
        scene.tissue[marrow <= 0] = TISSUE["marrow"]
        for box, joint in joints:
            scene.tissue[box][joint & (scene.distance["body"][box] <= 0)] = TISSUE["cartilage"]
        p, (ox, oy, oz) = self.p, self.bone_offset
        scene.add("cartilage", "ellipsoid", (ox, -46 * p + oy, -8 * p + oz), (4 * p, 9 * p, 17 * p), outside=bone)

    def _paint_bowel_and_vessels(self, scene: Scene) -> None:
        p = self.p
        _, bladder_radii = self.bladder_geometry()
        bladder_top = self.bladder_geometry()[0][2] + bladder_radii[2]
        contents = ("bowel_fluid", "gas", "stool")
        for (offset, radius, _), content in zip(self.bowel, self.bowel_contents):
            centre = (offset[0], offset[1], max(bladder_top + radius - 8, 30) + abs(offset[2]) * 10 + 10)
            scene.add("bowel_wall", "ellipsoid", centre, (radius, radius * 0.8, radius))
            scene.add(contents[content], "ellipsoid", centre, (radius - 2, radius * 0.8 - 2, radius - 2))
        # The sigmoid colon leaves the top of the rectum forwards: bowel, not rectum.
        scene.add("bowel_wall", "capsule", (5, 66, 105), (28, 25, 100), 13)
        scene.add("stool", "capsule", (5, 66, 105), (28, 25, 100), 10.5)
        for s in (-1, 1):
            for kind, dx, dy, radius in (("artery", 0, 0, 4.5), ("vein", -6, 6, 6.0)):
                scene.add(
                    kind, "capsule", (s * (44 + dx) * p, -24 + dy, 150), (s * (72 + dx) * p, -36 + dy, 20), radius
                )
                scene.add(
                    kind, "capsule", (s * (72 + dx) * p, -36 + dy, 20), (s * (80 + dx) * p, -45 + dy, -150), radius
                )
                scene.add(
                    kind, "capsule", (s * (38 + dx) * p, 35 + dy, 150), (s * (42 + dx) * p, 25 + dy, 40), radius - 0.5
                )
        a, b, c = self.prostate_radii
        sx, sy, sz = self.prostate_shift
        for angle, radius in self.plexus:  # veins on the front and sides of the gland
            x, y = sx + (a + 2) * np.cos(angle), sy + (b + 2) * np.sin(angle)
            scene.add("vein", "capsule", (x, y, sz - 0.7 * c), (x * 1.05, y, sz + 0.7 * c), radius)
        for s in (-1, 1):  # neurovascular bundles, behind and beside the gland
            scene.add(
                "vein",
                "capsule",
                (sx + s * 0.75 * a, sy + 0.75 * b, sz - c),
                (sx + s * 0.85 * a, sy + 0.8 * b, sz + c),
                2.5,
            )

    def _paint_seminal_vesicles(self, scene: Scene) -> None:
        a, b, c = self.prostate_radii
        sx, sy, sz = self.prostate_shift
        for side, (reach, radius, rise) in zip((-1, 1), self.seminal_vesicles):
            start = np.array([sx + side * 6, sy + 0.55 * b, sz + 0.75 * c])
            end = np.array([sx + side * reach, sy + b + 10, sz + c + rise])
            for t in (0.15, 0.5, 0.85):  # lobulated: a chain of small ellipsoids
                centre = tuple(start + t * (end - start))
                scene.add("seminal_fluid", "ellipsoid", centre, (radius * 1.2, radius * 0.7, radius))

    def _paint_rectum(self, scene: Scene) -> None:
        g = scene.grid
        tube = self.rectum_tube()
        heights, cx, cy, rx, ry = tube
        box = g.box(
            (float(np.min(cx - rx)), float(np.min(cy - ry)), heights[0]),
            (float(np.max(cx + rx)), float(np.max(cy + ry)), heights[-1]),
        )
        coords = g.coords(box)
        outer = elliptic_tube(*coords, *tube).astype(np.float32)
        lumen = elliptic_tube(*coords, *self.rectum_tube(shrink=3.0))
        rectum = np.full(g.shape, FAR, dtype=np.float32)
        rectum[box] = outer
        scene.distance["rectum"] = rectum
        tissue = scene.tissue[box]
        tissue[outer <= 0] = TISSUE["rectal_wall"]
        content = {"empty": "mucus", "stool": "stool", "gas": "gas"}[self.rectal_content]
        if self.rectal_content == "empty":
            lumen = lumen + 1.5  # collapsed: a thin bright line of mucus
        tissue[lumen <= 0] = TISSUE[content]
        if self.rectal_content == "stool":
            centre_y = float(cy[3])
            for offset, radius in self.stool_bubbles:
                scene.add(
                    "gas", "ellipsoid", (offset[0], centre_y + offset[1], offset[2]), (radius,) * 3, inside=rectum
                )

    def _paint_bladder(self, scene: Scene) -> None:
        g = scene.grid
        centre, radii = self.bladder_geometry()
        box = g.box(*_bounds(centre, max(radii) + 4))
        coords = g.coords(box)
        d = ellipsoid(*coords, centre, radii) + 3.0 * self.bladder_shape(*coords)
        d = np.maximum(d, 0.5 - self.prostate_distance(*coords))  # the prostate indents its base
        d = np.maximum(d, 3.0 - scene.distance["rectum"][box])  # and the rectum stays behind it
        bladder = np.full(g.shape, FAR, dtype=np.float32)
        bladder[box] = d
        scene.distance["bladder"] = bladder
        wall = 2.0 + 2.5 * np.clip(1 - self.bladder_ml / 400, 0, 1)  # thicker when emptier
        scene.tissue[box][d <= 0] = TISSUE["bladder_wall"]
        scene.tissue[box][d <= -wall] = TISSUE["urine"]

    def _paint_prostate(self, scene: Scene) -> None:
        g = scene.grid
        a, b, c = self.prostate_radii
        reach = 1.3 * max(a, b, c) + 4
        box = g.box(*_bounds(tuple(self.prostate_shift), reach))
        coords = g.coords(box)
        d = self.prostate_distance(*coords)
        d = np.maximum(d, -scene.distance["rectum"][box])  # flattened behind by the rectum
        prostate = np.full(g.shape, FAR, dtype=np.float32)
        prostate[box] = d
        scene.distance["prostate"] = prostate
        lx, ly, lz = self._prostate_local(*coords)
        inside = d <= 0
        tissue = scene.tissue[box].copy()
        # Around the gland: fat, with the bright tortuous veins of the periprostatic plexus in
        # front of and beside it (the neurovascular bundles behind are painted with the vessels).
        plexus = (d > 0.5) & (d <= self.plexus_mm) & (ly < 0.3 * b) & (tissue == TISSUE["fat"])
        where = np.nonzero(plexus)
        veins = np.abs(self.plexus_veins(*(axis[where] for axis in coords))) < 0.4
        tissue[tuple(axis[veins] for axis in where)] = TISSUE["venous_plexus"]

        # Zones, as on T2-weighted MRI: the peripheral zone (bright) wraps the back and sides of
        # the gland from apex to base; the transition zone (darker, nodular) sits in front and
        # above the apex and grows with the gland; the central zone (dark) surrounds the
        # ejaculatory ducts at the base; the anterior fibromuscular stroma (dark) covers the
        # front; a thin dark capsule bounds the rest.
        tissue[inside] = TISSUE["peripheral_zone"]
        scale = (self.transition_share / (0.92 * 0.8 * 0.85)) ** (1 / 3)
        tz_centre, tz_radii = (0.0, -0.18 * b, 0.1 * c), (0.92 * a * scale, 0.8 * b * scale, 0.85 * c * scale)
        rim = 4.5 + 7.0 * np.clip(ly / b + 0.5, 0.0, 1.0)  # the peripheral zone: thin in front, thickest at the back
        central = (ellipsoid(lx, ly, lz, tz_centre, tz_radii) <= 0) & (d < -rim)
        tissue[inside & central] = TISSUE["transition_zone"]
        for (fx, fy, fz), radius, dark in self.nodules:
            centre = tuple(o + f * r for o, f, r in zip(tz_centre, (fx, fy, fz), tz_radii))
            nodule = ellipsoid(lx, ly, lz, centre, (radius * max(tz_radii),) * 3) <= 0
            tissue[inside & central & nodule] = TISSUE["nodule_dark" if dark else "nodule_bright"]
        base = ellipsoid(lx, ly, lz, (0, 0.2 * b, 0.7 * c), (0.45 * a, 0.4 * b, 0.45 * c)) <= 0
        tissue[inside & base & ~central] = TISSUE["central_zone"]
        if self.lesion is not None:
            (fx, fy, fz), radius = self.lesion
            lesion = ellipsoid(lx, ly, lz, (fx * a, fy * b, fz * c), (radius,) * 3) <= 0
            tissue[inside & lesion & ~central] = TISSUE["lesion"]
        tissue[inside & (d > -self.capsule_mm)] = TISSUE["capsule"]
        stroma = ellipsoid(lx, ly, lz, (0, -0.95 * b, 0.1 * c), (0.6 * a, 0.42 * b, 0.85 * c)) <= 0
        tissue[inside & stroma] = TISSUE["stroma"]
        urethra = capsule(lx, ly, lz, (0, -0.25 * b, -c), (0, -0.1 * b, c), 2.2) <= 0
        tissue[inside & urethra] = TISSUE["urethra"]
        scene.tissue[box] = tissue


class _Sum:
    """``a * field_a + b * field_b``: the case's deformation plus this week's."""

    def __init__(self, first: SmoothField, first_mm: float, second: SmoothField, second_mm: float):
        self.first, self.first_mm, self.second, self.second_mm = first, first_mm, second, second_mm

    @property
    def bound(self) -> float:
        """The largest displacement (mm) the sum can give."""
        return self.first_mm * self.first.bound + self.second_mm * self.second.bound

    def __call__(self, x, y, z):
        return self.first_mm * self.first(x, y, z) + self.second_mm * self.second(x, y, z)


class Scene:
    """What :meth:`Pelvis.render` fills in for a block of voxels."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.tissue = np.zeros(grid.shape, dtype=np.uint8)  # air
        self.distance: dict[str, np.ndarray] = {}
        self.truth = np.zeros(grid.shape, dtype=np.uint8)
        self.mask = np.zeros(grid.shape, dtype=np.uint8)

    def add(
        self, tissue: str, kind: str, *args, inside: np.ndarray | None = None, outside: np.ndarray | None = None
    ) -> None:
        """Paint ``tissue`` where an ellipsoid or capsule is (only ``inside`` or ``outside`` a
        shape's distance map, if given)."""
        g = self.grid
        if kind == "ellipsoid":
            centre, radii = args[0], args[1]
            box = g.box(*_bounds(centre, max(radii)))
            d = ellipsoid(*g.coords(box), *args)
        else:
            start, end, radius = args
            box = g.box(*_segment_bounds(start, end, radius))
            d = capsule(*g.coords(box), *args)
        where = (d <= 0) & (self.distance["body"][box] <= 0)
        if inside is not None:
            where &= inside[box] <= 0
        if outside is not None:
            where &= outside[box] > 0
        self.tissue[box][where] = TISSUE[tissue]

    def finish_labels(self, pelvis: Pelvis) -> None:
        """True labels from the true shapes; the stored mask from the rater's version of them."""
        g = self.grid
        for index, name in enumerate(LABELLED):
            label = LABELS.index(name)
            distance = self.distance[name]
            self.truth[distance <= 0] = label
            style = RATER_STYLES[name]
            near = distance < 8.0  # the rater's line only matters near the surface
            where = np.nonzero(near)
            wobble = pelvis.rater_wobble[name](g.X[where], g.Y[where], g.Z[where])
            offset = (
                pelvis.rater_bias[name]
                + style.wobble * wobble
                + style.level_jitter * pelvis.rater_levels[index][where[2]]
            )  # axial level = z index
            drawn = np.zeros(g.shape, dtype=bool)
            drawn[distance <= -8.0] = True
            drawn[where] = distance[where] <= offset
            if name == "prostate":
                drawn &= self._within_apex_and_base(pelvis)
            self.mask[drawn] = label

    def _within_apex_and_base(self, pelvis: Pelvis) -> np.ndarray:
        """Axial levels between where this rater put the apex and the base."""
        truth = self.distance["prostate"] <= 0
        levels = np.flatnonzero(truth.any(axis=(0, 1)))
        keep = np.ones(self.grid.shape, dtype=bool)
        if len(levels):
            z = self.grid.z
            low, high = z[levels[0]] + pelvis.apex_base[0], z[levels[-1]] - pelvis.apex_base[1]
            keep[:, :, (z < low - 0.5) | (z > high + 0.5)] = False
        return keep

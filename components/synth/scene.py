"""Synthetic aerial town scene with solar panels, rendered with numpy and Pillow only (no I/O).

`generate_scene(size, seed)` lays out a rotated street grid (sidewalks, lane markings, zebra
crossings, parked cars), blocks of house plots (gable, hip and flat roofs with chimneys and
skylights; driveways, patios, pools, hedges, trees), the odd flat-roofed apartment block and
park; it places solar-panel arrays on roofs and renders everything at 0.1 m per pixel with sun
shading, cast shadows, texture, a slight blur and sensor noise. It returns the RGB array and
each panel's rotated rectangle in pixel coordinates (x right, y down, pixel edges on integers).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PIXEL_SIZE_M = 0.1
MIN_SIZE = 64

RGB = tuple[int, int, int]

# Materials of flat-painted items: how much fine texture each gets.
LAWN, ASPHALT, PAVING, WATER, SMOOTH, MARKING, SIDEWALK, SOIL = range(8)
TEXTURE_AMPLITUDE = np.array([0.0, 0.09, 0.05, 0.025, 0.015, 0.08, 0.05, 0.16], np.float32)

ROOF_COLOURS: dict[str, list[RGB]] = {
    "terracotta": [(168, 82, 58), (183, 98, 70), (150, 72, 52), (176, 110, 84)],
    "brown": [(112, 78, 60), (126, 94, 72), (98, 70, 58)],
    "grey": [(128, 128, 132), (150, 148, 145), (112, 114, 118)],
    "slate": [(72, 76, 86), (62, 66, 74), (82, 84, 92)],
}
ROOF_COLOUR_WEIGHTS = {"terracotta": 0.42, "brown": 0.2, "grey": 0.2, "slate": 0.18}
FLAT_ROOF_COLOURS: list[RGB] = [(160, 156, 146), (138, 138, 134), (176, 172, 160), (96, 96, 100)]
PANEL_COLOURS: list[RGB] = [(22, 24, 30), (30, 44, 82), (25, 34, 58), (28, 32, 46), (34, 50, 92)]
CAR_DARK: list[RGB] = [(24, 24, 28), (30, 36, 56), (44, 44, 50), (36, 30, 30)]
CAR_LIGHT: list[RGB] = [
    (222, 222, 226),
    (182, 184, 188),
    (160, 34, 30),
    (44, 74, 140),
    (140, 140, 145),
]
TREE_COLOURS: list[RGB] = [(62, 96, 44), (48, 82, 40), (82, 106, 54), (36, 62, 40), (70, 90, 40)]


@dataclass(frozen=True)
class Box:
    """A rotated rectangle in pixel coordinates.

    (cx, cy) is the centre; w is the side along the local u axis, h the side along v; angle
    (radians) turns u from the image x axis towards +y (the v axis is u turned by +90°).
    """

    cx: float
    cy: float
    w: float
    h: float
    angle: float

    def point(self, u: float, v: float) -> tuple[float, float]:
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        return self.cx + u * cos - v * sin, self.cy + u * sin + v * cos

    def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        dx, dy = x - self.cx, y - self.cy
        return dx * cos + dy * sin, -dx * sin + dy * cos

    def corners(self) -> np.ndarray:
        half_w, half_h = self.w / 2, self.h / 2
        signs = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        return np.array([self.point(su * half_w, sv * half_h) for su, sv in signs])

    def sub(self, u: float, v: float, w: float, h: float, turn: float = 0.0) -> Box:
        """A box centred at local (u, v) of this one, turned by `turn` relative to it."""
        x, y = self.point(u, v)
        return Box(x, y, w, h, self.angle + turn)

    def shifted(self, dx: float, dy: float) -> Box:
        return Box(self.cx + dx, self.cy + dy, self.w, self.h, self.angle)

    def grown(self, margin: float) -> Box:
        return Box(self.cx, self.cy, self.w + 2 * margin, self.h + 2 * margin, self.angle)

    @property
    def radius(self) -> float:
        return math.hypot(self.w, self.h) / 2

    @property
    def v_axis(self) -> tuple[float, float]:
        return -math.sin(self.angle), math.cos(self.angle)

    def contains(self, other: Box, margin: float = 0.0) -> bool:
        corners = other.corners()
        u, v = self.local(corners[:, 0], corners[:, 1])
        inside_u = np.abs(u) <= self.w / 2 - margin
        inside_v = np.abs(v) <= self.h / 2 - margin
        return bool(np.all(inside_u & inside_v))

    def distance_to(self, x: float, y: float) -> float:
        u, v = self.local(np.float64(x), np.float64(y))
        return math.hypot(max(abs(u) - self.w / 2, 0.0), max(abs(v) - self.h / 2, 0.0))


def boxes_overlap(first: Box, second: Box, margin: float = 0.0) -> bool:
    """Separating-axis test for two rotated rectangles, `first` grown by `margin`."""
    grown = first.grown(margin)
    corners_a, corners_b = grown.corners(), second.corners()
    for box in (grown, second):
        for angle in (box.angle, box.angle + math.pi / 2):
            axis = np.array([math.cos(angle), math.sin(angle)])
            proj_a, proj_b = corners_a @ axis, corners_b @ axis
            if proj_a.max() < proj_b.min() or proj_b.max() < proj_a.min():
                return False
    return True


# A plot's box factory: (s along the road, d inward, size along, size across[, turn]) -> Box.
_PlotBox = Callable[..., Box]


@dataclass
class Roof:
    """A building's roof: its footprint, shape, colour, pitch and cast-shadow length (px)."""

    box: Box
    kind: str  # "gable", "hip" or "flat"
    colour: RGB
    pitch: float
    shadow: float


@dataclass
class Panel:
    """A solar-panel array: a grid of modules inside a rotated rectangle."""

    box: Box
    modules: tuple[int, int]  # module count along u and along v
    colour: RGB
    tilted: bool  # racked on a flat roof: casts a short shadow


@dataclass
class Item:
    """A flat-coloured rotated rectangle: paving, road, marking, pool, car part, vent…"""

    box: Box
    colour: RGB
    material: int


@dataclass
class Tree:
    """A tree canopy as a few overlapping discs (x, y, radius) of one foliage colour."""

    blobs: list[tuple[float, float, float]]
    colour: RGB


@dataclass
class Layout:
    """Everything in a scene, in painting order per list."""

    size: int
    sun: tuple[float, float]  # horizontal unit vector towards the sun, image coordinates
    sun_elevation: float
    ground_items: list[Item] = field(default_factory=list)
    ground_casters: list[tuple[Box, float]] = field(default_factory=list)
    roofs: list[Roof] = field(default_factory=list)
    panels: list[Panel] = field(default_factory=list)
    panel_roofs: list[int] = field(default_factory=list)
    roof_items: list[Item] = field(default_factory=list)
    roof_casters: list[tuple[Box, float]] = field(default_factory=list)
    trees: list[Tree] = field(default_factory=list)
    hedges: list[Box] = field(default_factory=list)


@dataclass
class Scene:
    """A rendered scene: RGB pixels and its panels' truth in pixel coordinates."""

    image: np.ndarray  # (size, size, 3) uint8
    panel_corners: np.ndarray  # (n, 4, 2) float64, x/y of each panel's corners
    occluded_fraction: np.ndarray  # (n,) share of each panel hidden under tree canopy
    panel_modules: list[tuple[int, int]]
    seed: int

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


def generate_scene(size: int = 2048, seed: int = 0) -> Scene:
    """Lay out and render a `size` x `size` town scene; identical output for identical input."""
    if size < MIN_SIZE:
        raise ValueError(f"scene size must be at least {MIN_SIZE} pixels, got {size}")
    rng = np.random.default_rng(seed)
    layout = _TownBuilder(size, rng).build()
    image, panel_labels, canopy = _render(layout, rng)
    return Scene(
        image=image,
        panel_corners=np.array([p.box.corners() for p in layout.panels]).reshape(-1, 4, 2),
        occluded_fraction=_occluded_fractions(panel_labels, canopy, len(layout.panels)),
        panel_modules=[p.modules for p in layout.panels],
        seed=seed,
    )


def generate_mosaic(size: int = 2048, seed: int = 0, parts: int = 1) -> Scene:
    """A `size` x `size` scene made of `parts` x `parts` towns side by side, each its own
    scene (seeds ``seed * parts**2`` onwards: own street grid angle, sun, roofs): more variety
    than one town of the same size. `parts` 1 is `generate_scene(size, seed)`."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    if parts == 1:
        return generate_scene(size, seed)
    part_size = size // parts
    if part_size * parts != size or part_size < MIN_SIZE:
        raise ValueError(
            f"a {size}-px scene cannot be cut into {parts}x{parts} equal parts of at least "
            f"{MIN_SIZE} px"
        )
    image = np.zeros((size, size, 3), dtype=np.uint8)
    corners, occluded, modules = [], [], []
    for index, (row, column) in enumerate(itertools.product(range(parts), repeat=2)):
        top, left = row * part_size, column * part_size
        part = generate_scene(part_size, seed * parts**2 + index)
        image[top : top + part_size, left : left + part_size] = part.image
        corners.append(part.panel_corners + np.array([left, top], dtype=np.float64))
        occluded.append(part.occluded_fraction)
        modules += part.panel_modules
    return Scene(
        image=image,
        panel_corners=np.concatenate(corners).reshape(-1, 4, 2),
        occluded_fraction=np.concatenate(occluded),
        panel_modules=modules,
        seed=seed,
    )


# --------------------------------------------------------------------------- layout


def _luminance(colour: tuple[float, float, float]) -> float:
    return 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]


def face_shade(
    direction: tuple[float, float], pitch: float, sun: tuple[float, float], elevation: float
) -> float:
    """Brightness factor of a roof face sloping down towards `direction` (flat roof: 1)."""
    facing = direction[0] * sun[0] + direction[1] * sun[1]
    lit = math.sin(pitch) * math.cos(elevation) * facing + math.cos(pitch) * math.sin(elevation)
    return 0.35 + 0.65 * lit / math.sin(elevation)


def _scaled(colour: RGB, factor: float, offset: float = 0.0) -> RGB:
    red, green, blue = (int(min(max(c * factor + offset, 0.0), 255.0)) for c in colour)
    return red, green, blue


def _jitter(rng: np.random.Generator, colour: RGB, spread: float) -> RGB:
    """`colour` scaled by up to ±spread and shifted by a few levels."""
    return _scaled(colour, 1 + float(rng.uniform(-spread, spread)), float(rng.uniform(-4, 4)))


class _TownBuilder:
    """Lays out a town on a street grid turned by a random angle; coordinates in pixels.

    Frame coordinates (t1, t2) run along and across the streets the houses face, centred on
    the image centre.
    """

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.rng = rng
        self.theta = float(rng.uniform(-0.5, 0.5))
        self.extent = size * 0.72 + 120
        azimuth = float(rng.uniform(-0.9, 0.9))  # sun bearing off due south (+y), + is east
        self.layout = Layout(
            size=size,
            sun=(math.sin(azimuth), math.cos(azimuth)),
            sun_elevation=float(rng.uniform(0.95, 1.15)),
        )

    # geometry helpers
    def frame_point(self, t1: float, t2: float) -> tuple[float, float]:
        cos, sin = math.cos(self.theta), math.sin(self.theta)
        half = self.size / 2
        return half + t1 * cos - t2 * sin, half + t1 * sin + t2 * cos

    def frame_box(self, t1: float, t2: float, w: float, h: float, turn: float = 0.0) -> Box:
        x, y = self.frame_point(t1, t2)
        return Box(x, y, w, h, self.theta + turn)

    def visible(self, box: Box) -> bool:
        r = box.radius
        return -r < box.cx < self.size + r and -r < box.cy < self.size + r

    def inside_image(self, box: Box, margin: float = 2.0) -> bool:
        corners = box.corners()
        return bool(np.all((corners >= margin) & (corners <= self.size - margin)))

    def shadow_length(self, height_m: float) -> float:
        return height_m / math.tan(self.layout.sun_elevation) / PIXEL_SIZE_M

    # the town
    def build(self) -> Layout:
        streets = self._road_lines(block=(290, 390), asphalt=(44, 64))
        cross_streets = self._road_lines(block=(460, 820), asphalt=(40, 56))
        self._roads(streets, cross_streets)
        for a2, b2 in _gaps_between(streets):
            for a1, b1 in _gaps_between(cross_streets):
                self._block(a1, b1, a2, b2)
        self._parked_cars(streets, cross_streets)
        self._trees_over_panels()
        return self.layout

    def _road_lines(
        self, block: tuple[float, float], asphalt: tuple[float, float]
    ) -> list[tuple[float, float, float]]:
        """(centre, asphalt width, sidewalk width) of parallel roads across the extent."""
        lines = []
        position = -self.extent - float(self.rng.uniform(0, block[1]))
        while position < self.extent + block[1]:
            width = float(self.rng.uniform(*asphalt))
            sidewalk = float(self.rng.uniform(12, 20))
            lines.append((position, width, sidewalk))
            position += width + 2 * sidewalk + float(self.rng.uniform(*block))
        return lines

    def _road_box(self, along_t1: bool, centre: float, width: float) -> Box:
        length = 2 * self.extent + 400
        if along_t1:
            return self.frame_box(0.0, centre, length, width)
        return self.frame_box(centre, 0.0, width, length)

    def _roads(
        self,
        streets: list[tuple[float, float, float]],
        cross_streets: list[tuple[float, float, float]],
    ) -> None:
        roads = [(True, line) for line in streets] + [(False, line) for line in cross_streets]
        items = self.layout.ground_items
        for along_t1, (centre, width, sidewalk) in roads:
            colour = _jitter(self.rng, (176, 173, 166), 0.04)
            items.append(
                Item(self._road_box(along_t1, centre, width + 2 * sidewalk), colour, SIDEWALK)
            )
        for along_t1, (centre, width, _) in roads:
            colour = _jitter(self.rng, (98, 99, 103), 0.06)
            items.append(Item(self._road_box(along_t1, centre, width), colour, ASPHALT))
        for along_t1, line in roads:
            others = cross_streets if along_t1 else streets
            self._markings(along_t1, line, others)

    def _markings(
        self,
        along_t1: bool,
        line: tuple[float, float, float],
        others: list[tuple[float, float, float]],
    ) -> None:
        centre, width, _ = line
        white = (226, 226, 218)

        def near_junction(t: float, clearance: float) -> bool:
            return any(abs(t - c) < w / 2 + s + clearance for c, w, s in others)

        def mark(t: float, across: float, length: float, thickness: float) -> None:
            box = (
                self.frame_box(t, centre + across, length, thickness)
                if along_t1
                else self.frame_box(centre + across, t, thickness, length)
            )
            if self.visible(box):
                self.layout.ground_items.append(Item(box, white, MARKING))

        if width >= 50:
            for t in np.arange(-self.extent, self.extent, 64.0):
                if not near_junction(float(t), 30):
                    mark(float(t), 0.0, 30.0, 2.5)
        for c, w, s in others:
            for side in (-1, 1):
                if self.rng.random() < 0.3:
                    t = c + side * (w / 2 + s + 22)
                    for across in np.arange(-width / 2 + 7, width / 2 - 5, 10.0):
                        mark(t, float(across), 34.0, 5.0)

    def _block(self, a1: float, b1: float, a2: float, b2: float) -> None:
        whole = self.frame_box((a1 + b1) / 2, (a2 + b2) / 2, b1 - a1, b2 - a2)
        if not self.visible(whole):
            return
        kind = self.rng.random()
        if kind < 0.07:
            self._park(whole)
            return
        spans = [(a1, b1)]
        if kind < 0.25 and b1 - a1 > 480:
            spans = self._apartment(a1, b1, a2, b2)
        split = a2 + (b2 - a2) * float(self.rng.uniform(0.45, 0.55))
        for s0, s1 in spans:
            for p0, p1 in self._plot_edges(s0, s1):
                self._plot(p0, p1, a2, 1.0, split - a2)
                self._plot(p0, p1, b2, -1.0, b2 - split)
        for road_t2, inward in ((a2, 1.0), (b2, -1.0)):
            if self.rng.random() < 0.35:
                self._street_trees(a1, b1, road_t2, inward)

    def _street_trees(self, a1: float, b1: float, road_t2: float, inward: float) -> None:
        """A row of trees along the front of a block, clear of the roofs."""
        rng = self.rng
        t1 = a1 + float(rng.uniform(10, 40))
        while t1 < b1 - 10:
            radius = float(rng.uniform(15, 26))
            x, y = self.frame_point(t1, road_t2 + inward * 10)
            roofs = (roof.box for roof in self.layout.roofs[-40:])
            if all(roof.distance_to(x, y) > radius + 3 for roof in roofs):
                self._add_tree(x, y, radius)
            t1 += float(rng.uniform(70, 110))

    def _plot_edges(self, a1: float, b1: float) -> list[tuple[float, float]]:
        count = max(1, round((b1 - a1) / 150))
        weights = self.rng.uniform(0.8, 1.2, count)
        edges = a1 + (b1 - a1) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
        return [(float(lo), float(hi)) for lo, hi in itertools.pairwise(edges)]

    def _park(self, whole: Box) -> None:
        rng = self.rng
        path = whole.sub(0, 0, whole.radius * 2, 16, float(rng.uniform(0.3, 1.2)))
        self.layout.ground_items.append(Item(path, (168, 160, 140), PAVING))
        for _ in range(int(rng.integers(12, 26))):
            u = rng.uniform(-whole.w / 2 + 20, whole.w / 2 - 20)
            v = rng.uniform(-whole.h / 2 + 20, whole.h / 2 - 20)
            x, y = whole.point(float(u), float(v))
            self._add_tree(x, y, float(rng.uniform(20, 46)))

    def _apartment(self, a1: float, b1: float, a2: float, b2: float) -> list[tuple[float, float]]:
        """An apartment block across both rows; returns the spans left for house plots."""
        rng = self.rng
        length = float(rng.uniform(200, min(320, b1 - a1 - 160)))
        middle = (a1 + b1) / 2 + float(rng.uniform(-0.15, 0.15)) * (b1 - a1 - length)
        inset = float(rng.uniform(38, 60))
        depth = b2 - a2 - 2 * inset
        t2 = (a2 + b2) / 2
        yard = self.frame_box(middle, t2, length + 44, b2 - a2 - 10)
        self.layout.ground_items.append(Item(yard, _jitter(rng, (172, 168, 160), 0.04), PAVING))
        box = self.frame_box(middle, t2, length, depth, float(rng.normal(0, 0.02)))
        roof = Roof(
            box,
            "flat",
            _jitter(rng, FLAT_ROOF_COLOURS[int(rng.integers(3))], 0.04),
            0.0,
            self.shadow_length(float(rng.uniform(8, 11))),
        )
        self._add_roof(roof, max_arrays=int(rng.integers(4, 13)))
        for index in range(int(rng.integers(1, int(length // 52) + 1))):
            self._add_car(
                self.frame_box(middle - length / 2 + 25 + index * 52, a2 + inset / 2, 44, 19)
            )
        return [(a1, middle - length / 2 - 30), (middle + length / 2 + 30, b1)]

    def _plot(self, s0: float, s1: float, road_t2: float, inward: float, depth: float) -> None:
        """A house plot between s0 and s1 along the road at road_t2, reaching `depth` inward."""
        if not self.visible(
            self.frame_box((s0 + s1) / 2, road_t2 + inward * depth / 2, s1 - s0, depth)
        ):
            return
        rng = self.rng
        width = s1 - s0

        def plot_box(s: float, d: float, along: float, across: float, turn: float = 0.0) -> Box:
            return self.frame_box(s, road_t2 + inward * d, along, across, turn)

        setback = float(rng.uniform(18, 45))
        along_max, across_max = min(135.0, width - 30), min(130.0, depth - setback - 35)
        if along_max < 55 or across_max < 55:
            self._garden_trees(plot_box, s0, s1, depth, [])
            return
        along = float(rng.uniform(min(70.0, along_max), along_max))
        across = float(rng.uniform(min(65.0, across_max), across_max))
        centre_s = (s0 + s1) / 2 + float(rng.uniform(-0.6, 0.6)) * (width - along - 24) / 2
        turn = float(rng.normal(0, 0.035))
        ridge_on_long_side = rng.random() < 0.82
        if (along >= across) == ridge_on_long_side:
            house = plot_box(centre_s, setback + across / 2, along, across, turn)
        else:
            house = plot_box(centre_s, setback + across / 2, across, along, math.pi / 2 + turn)
        self._add_house(house)
        buildings = [house]
        left_gap = centre_s - along / 2 - s0
        right_gap = s1 - (centre_s + along / 2)
        gap, side = (left_gap, -1.0) if left_gap > right_gap else (right_gap, 1.0)
        if gap >= 40:
            drive_s = centre_s + side * (along / 2 + min(gap, 60) / 2)
            self._driveway(plot_box, drive_s, setback, across, depth, buildings)
        back = setback + across + 8
        if rng.random() < 0.4:
            patio = plot_box(centre_s, back + 4, along * float(rng.uniform(0.4, 0.8)), 22)
            self.layout.ground_items.append(
                Item(patio, _jitter(rng, (186, 172, 150), 0.06), PAVING)
            )
            back += 24
        if depth - back > 70 and width > 110 and rng.random() < 0.3:
            pool = self._pool(plot_box, s0, s1, back, depth, buildings)
            if pool is not None:
                buildings.append(pool)
        if depth - back > 50:
            self._backyard_extras(plot_box, s0, s1, back, depth, buildings)
        if rng.random() < 0.35:
            self.layout.hedges.append(
                plot_box((s0 + s1) / 2, depth - 6, width - 6, float(rng.uniform(7, 11)))
            )
        if rng.random() < 0.2:
            hedge_s = s0 + 6 if side > 0 else s1 - 6
            self.layout.hedges.append(
                plot_box(hedge_s, (setback + depth) / 2, 8, depth - setback - 8)
            )
        self._garden_trees(plot_box, s0, s1, depth, buildings)

    def _driveway(
        self,
        plot_box: _PlotBox,
        drive_s: float,
        setback: float,
        across: float,
        depth: float,
        buildings: list[Box],
    ) -> None:
        rng = self.rng
        length = setback + across * 0.7
        drive = plot_box(drive_s, length / 2, 30, length)
        self.layout.ground_items.append(Item(drive, _jitter(rng, (170, 166, 158), 0.05), PAVING))
        if rng.random() < 0.4:
            self._add_car(plot_box(drive_s, setback * 0.5 + 22, 19, 44))
        if rng.random() < 0.3 and length + 58 < depth - 12:
            garage = plot_box(drive_s, length + 28, 36, 52, float(rng.normal(0, 0.02)))
            colour = _jitter(rng, FLAT_ROOF_COLOURS[int(rng.integers(4))], 0.05)
            self._add_roof(Roof(garage, "flat", colour, 0.0, self.shadow_length(3.0)), max_arrays=1)
            buildings.append(garage)

    def _pool(
        self,
        plot_box: _PlotBox,
        s0: float,
        s1: float,
        back: float,
        depth: float,
        buildings: list[Box],
    ) -> Box | None:
        """A pool with a stone rim in the back garden, clear of `buildings`; returns the rim."""
        rng = self.rng
        along = float(rng.uniform(50, min(100, s1 - s0 - 40)))
        across = float(rng.uniform(30, min(50, depth - back - 30)))
        centre_s = float(rng.uniform(s0 + along / 2 + 18, s1 - along / 2 - 18))
        centre_d = float(rng.uniform(back + across / 2 + 8, depth - across / 2 - 16))
        water = plot_box(centre_s, centre_d, along, across, float(rng.normal(0, 0.03)))
        rim = water.grown(float(rng.uniform(3, 6)))
        if any(boxes_overlap(rim, building, 4.0) for building in buildings):
            return None
        items = self.layout.ground_items
        items.append(Item(rim, _jitter(rng, (214, 208, 194), 0.03), PAVING))
        items.append(Item(water, _jitter(rng, (72, 168, 204), 0.06), WATER))
        return rim

    def _backyard_spot(
        self,
        plot_box: _PlotBox,
        span: tuple[float, float, float, float],
        size: tuple[float, float],
        buildings: list[Box],
    ) -> Box | None:
        """A box of `size` (along, across) inside span (s0, s1, d0, d1), clear of buildings."""
        s0, s1, d0, d1 = span
        if s1 - s0 < size[0] + 16 or d1 - d0 < size[1] + 16:
            return None
        spot = plot_box(
            float(self.rng.uniform(s0 + 8 + size[0] / 2, s1 - 8 - size[0] / 2)),
            float(self.rng.uniform(d0 + 8 + size[1] / 2, d1 - 8 - size[1] / 2)),
            *size,
            float(self.rng.normal(0, 0.05)),
        )
        if any(boxes_overlap(spot, building, 6.0) for building in buildings):
            return None
        return spot

    def _backyard_extras(
        self,
        plot_box: _PlotBox,
        s0: float,
        s1: float,
        back: float,
        depth: float,
        buildings: list[Box],
    ) -> None:
        """A vegetable bed and a garden shed, sometimes."""
        rng = self.rng
        span = (s0, s1, back, depth)
        if rng.random() < 0.3:
            size = (float(rng.uniform(30, 70)), float(rng.uniform(18, 40)))
            bed = self._backyard_spot(plot_box, span, size, buildings)
            if bed is not None:
                colour = _jitter(rng, (116, 94, 70), 0.08)
                self.layout.ground_items.append(Item(bed, colour, SOIL))
                buildings.append(bed)
        if rng.random() < 0.25:
            size = (float(rng.uniform(24, 36)), float(rng.uniform(26, 40)))
            shed = self._backyard_spot(plot_box, span, size, buildings)
            if shed is not None:
                colour = _jitter(rng, ((118, 92, 66), (96, 98, 100))[int(rng.integers(2))], 0.08)
                kind = "gable" if rng.random() < 0.6 else "flat"
                pitch = 0.5 if kind == "gable" else 0.0
                self._add_roof(
                    Roof(shed, kind, colour, pitch, self.shadow_length(2.5)), max_arrays=0
                )
                buildings.append(shed)

    def _garden_trees(
        self, plot_box: _PlotBox, s0: float, s1: float, depth: float, keep_clear: list[Box]
    ) -> None:
        rng = self.rng
        if s1 - s0 < 30:
            return
        for _ in range(int(rng.integers(1, 6))):
            radius = float(rng.uniform(14, 42))
            box = plot_box(
                float(rng.uniform(s0 + 10, s1 - 10)), float(rng.uniform(10, depth - 10)), 1, 1
            )
            if all(b.distance_to(box.cx, box.cy) > radius + 4 for b in keep_clear):
                self._add_tree(box.cx, box.cy, radius)

    def _add_tree(self, x: float, y: float, radius: float) -> None:
        rng = self.rng
        blobs = [(x, y, radius * 0.72)]
        for _ in range(int(rng.integers(3, 7))):
            angle = float(rng.uniform(0, 2 * math.pi))
            reach = float(rng.uniform(0.2, 0.45)) * radius
            blobs.append(
                (
                    x + reach * math.cos(angle),
                    y + reach * math.sin(angle),
                    radius * float(rng.uniform(0.45, 0.62)),
                )
            )
        colour = _jitter(rng, TREE_COLOURS[int(rng.integers(len(TREE_COLOURS)))], 0.08)
        self.layout.trees.append(Tree(blobs, colour))

    def _add_car(self, box: Box) -> None:
        if not self.visible(box):
            return
        rng = self.rng
        palette = CAR_DARK if rng.random() < 0.45 else CAR_LIGHT
        body = _jitter(rng, palette[int(rng.integers(len(palette)))], 0.05)
        glass = (34, 38, 46) if _luminance(body) > 60 else (16, 18, 22)
        lighter = _scaled(body, 1.12, 6)
        long_axis_is_u = box.w > box.h
        length, width = (box.w, box.h) if long_axis_is_u else (box.h, box.w)
        turn = 0.0 if long_axis_is_u else math.pi / 2
        car = Box(box.cx, box.cy, length, width, box.angle + turn)
        if rng.random() < 0.5:
            car = Box(car.cx, car.cy, length, width, car.angle + math.pi)
        items = self.layout.ground_items
        items.append(Item(car, body, SMOOTH))
        items.append(Item(car.sub(length * 0.16, 0, length * 0.2, width * 0.8), glass, SMOOTH))
        items.append(Item(car.sub(-length * 0.3, 0, length * 0.12, width * 0.8), glass, SMOOTH))
        items.append(Item(car.sub(-length * 0.06, 0, length * 0.28, width * 0.76), lighter, SMOOTH))
        self.layout.ground_casters.append((car, 5.0))

    def _parked_cars(
        self,
        streets: list[tuple[float, float, float]],
        cross_streets: list[tuple[float, float, float]],
    ) -> None:
        rng = self.rng
        for along_t1, lines, others in (
            (True, streets, cross_streets),
            (False, cross_streets, streets),
        ):
            for centre, width, _ in lines:
                for side in (-1.0, 1.0):
                    t = -self.extent + float(rng.uniform(0, 200))
                    while t < self.extent:
                        t += float(rng.uniform(55, 420))
                        if any(abs(t - c) < w / 2 + s + 40 for c, w, s in others):
                            continue
                        offset = centre + side * (width / 2 - float(rng.uniform(11, 14)))
                        box = (
                            self.frame_box(t, offset, 44, 19)
                            if along_t1
                            else self.frame_box(offset, t, 19, 44)
                        )
                        self._add_car(box)

    # buildings and what sits on their roofs
    def _add_house(self, box: Box) -> None:
        rng = self.rng
        kind = str(rng.choice(["gable", "hip", "flat"], p=[0.54, 0.28, 0.18]))
        if kind == "flat":
            colour = _jitter(rng, FLAT_ROOF_COLOURS[int(rng.integers(4))], 0.05)
            roof = Roof(box, kind, colour, 0.0, self.shadow_length(float(rng.uniform(4, 6.5))))
            self._add_roof(roof, max_arrays=3)
            return
        family = str(rng.choice(list(ROOF_COLOUR_WEIGHTS), p=list(ROOF_COLOUR_WEIGHTS.values())))
        palette = ROOF_COLOURS[family]
        colour = _jitter(rng, palette[int(rng.integers(len(palette)))], 0.05)
        roof = Roof(
            box,
            kind,
            colour,
            float(rng.uniform(0.55, 0.8)),
            self.shadow_length(float(rng.uniform(5, 7.5))),
        )
        self._add_roof(roof, max_arrays=2)

    def _add_roof(self, roof: Roof, max_arrays: int) -> None:
        if not self.visible(roof.box):
            return
        self.layout.roofs.append(roof)
        self.layout.ground_casters.append((roof.box, roof.shadow))
        if max_arrays == 0:
            return
        if roof.kind == "flat":
            panels = self._flat_roof_panels(roof, max_arrays)
            self._flat_roof_details(roof, panels)
        else:
            panels = self._pitched_roof_panels(roof)
            self._pitched_roof_details(roof, panels)

    def _add_panel(
        self, roof: Roof, box: Box, modules: tuple[int, int], face_lum: float, tilted: bool
    ) -> bool:
        if not self.inside_image(box):
            return False
        base = PANEL_COLOURS[int(self.rng.integers(len(PANEL_COLOURS)))]
        # Keep every array clearly darker than the roof face it sits on.
        scale = min(1.0, 0.62 * face_lum / max(_luminance(base), 1.0))
        colour = _jitter(self.rng, _scaled(base, scale), 0.06)
        self.layout.panels.append(Panel(box, modules, colour, tilted))
        self.layout.panel_roofs.append(len(self.layout.roofs) - 1)
        if tilted:
            self.layout.roof_casters.append((box, 3.5))
        return True

    def _module_grid(self, room_u: float, room_v: float) -> tuple[float, float, int, int] | None:
        """Module pitch (u, v) and counts filling part of a room_u x room_v area, or None."""
        rng = self.rng
        long, short = float(rng.uniform(15.5, 17.5)), float(rng.uniform(9.6, 10.6))
        orientations = [(short, long), (long, short)]
        if rng.random() < 0.5:
            orientations.reverse()
        for pitch_u, pitch_v in orientations:
            max_u = int(min(room_u, 100) // pitch_u)
            max_v = int(min(room_v, 60 if pitch_u * max_u > 60 else 100) // pitch_v)
            if max_u >= 1 and max_v >= 1:
                small = rng.random() < 0.15
                count_u = int(
                    rng.integers(1, min(3, max_u) + 1)
                    if small
                    else rng.integers(max(1, max_u // 2), max_u + 1)
                )
                count_v = int(rng.integers(max(1, (max_v + 1) // 2), max_v + 1))
                if pitch_u * count_u > 60 and pitch_v * count_v > 60:
                    count_v = int(60 // pitch_v)
                return pitch_u, pitch_v, count_u, count_v
        return None

    def _pitched_roof_panels(self, roof: Roof) -> list[Box]:
        rng = self.rng
        box = roof.box
        sunward = (
            1.0
            if box.v_axis[0] * self.layout.sun[0] + box.v_axis[1] * self.layout.sun[1] > 0
            else -1.0
        )
        if rng.random() > 0.9:
            return []
        main = sunward if rng.random() < 0.8 else -sunward
        faces = [main, -main] if rng.random() < 0.3 else [main]
        placed: list[Box] = []
        for face in faces:
            halves = 2 if rng.random() < 0.25 else 1
            for half in range(halves):
                panel = self._face_panel(roof, face, half, halves)
                if panel is not None:
                    placed.append(panel)
        return placed

    def _face_panel(self, roof: Roof, face: float, part: int, parts: int) -> Box | None:
        """An array on one side face of a pitched roof, in part `part` of `parts` along u.

        A hip roof's side face is a trapezoid, widest at the eave: there the array keeps to
        the lower part of the face, where it has room along the eave.
        """
        rng = self.rng
        box = roof.box
        ridge_gap, eave_gap, end_gap, split_gap = 7.0, 7.0, 7.0, 8.0 if parts > 1 else 0.0
        room_v = box.h / 2 - ridge_gap - eave_gap
        half_u = box.w / 2 - end_gap
        if roof.kind == "hip":
            room_v *= 0.6
            half_u = (box.w - box.h) / 2 + box.h / 2 - eave_gap - room_v - end_gap
        grid = self._module_grid(2 * half_u / parts - split_gap, room_v)
        if room_v < 10 or grid is None:
            return None
        pitch_u, pitch_v, count_u, count_v = grid
        size_u, size_v = pitch_u * count_u, pitch_v * count_v
        far = box.h / 2 - eave_gap - size_v  # furthest start from the ridge
        start = far if roof.kind == "hip" else float(rng.uniform(ridge_gap, far))
        lo = -half_u + part * 2 * half_u / parts
        hi = lo + 2 * half_u / parts - split_gap
        centre_u = float(rng.uniform(lo + size_u / 2, max(lo + size_u / 2, hi - size_u / 2)))
        panel = box.sub(centre_u, face * (start + size_v / 2), size_u, size_v)
        direction = (face * box.v_axis[0], face * box.v_axis[1])
        face_lum = _luminance(roof.colour) * face_shade(
            direction, roof.pitch, self.layout.sun, self.layout.sun_elevation
        )
        if self._add_panel(roof, panel, (count_u, count_v), face_lum, tilted=False):
            return panel
        return None

    def _flat_roof_panels(self, roof: Roof, max_arrays: int) -> list[Box]:
        """Rows of racked arrays, aligned to the roof or facing due south."""
        rng = self.rng
        if rng.random() > 0.85:
            return []
        box = roof.box
        turn = 0.0 if rng.random() < 0.5 else -box.angle  # 0: along the roof; else image axes
        grid_frame = box.sub(0, 0, 1, 1, turn)
        pitch_u, pitch_v = float(rng.uniform(15.5, 17.5)), float(rng.uniform(9.6, 10.6))
        rows_v = int(rng.integers(1, 3))
        row_gap = float(rng.uniform(8, 14))
        count_u = int(rng.integers(2, 7))
        size_u, size_v = pitch_u * count_u, pitch_v * rows_v
        reach = box.radius
        placed: list[Box] = []
        offset_u = float(rng.uniform(0, size_u))
        for v in np.arange(-reach, reach, size_v + row_gap):
            for u in np.arange(-reach - offset_u, reach, size_u + 8):
                panel = grid_frame.sub(float(u) + size_u / 2, float(v) + size_v / 2, size_u, size_v)
                if len(placed) >= max_arrays or not box.contains(panel, margin=8):
                    continue
                if rng.random() < 0.8 and self._add_panel(
                    roof, panel, (count_u, rows_v), _luminance(roof.colour), tilted=True
                ):
                    placed.append(panel)
        return placed

    def _free_spot(
        self, box: Box, size: tuple[float, float], region: tuple[float, ...], avoid: list[Box]
    ) -> Box | None:
        """A box of `size` in box-local region (u0, u1, v0, v1) clear of `avoid`, or None."""
        rng = self.rng
        u0, u1, v0, v1 = region
        if u1 - u0 <= size[0] or v1 - v0 <= size[1]:
            return None
        for _ in range(6):
            u = float(rng.uniform(u0 + size[0] / 2, u1 - size[0] / 2))
            v = float(rng.uniform(v0 + size[1] / 2, v1 - size[1] / 2))
            spot = box.sub(u, v, *size)
            if not any(boxes_overlap(spot, other, 6.0) for other in avoid):
                return spot
        return None

    def _pitched_roof_details(self, roof: Roof, panels: list[Box]) -> None:
        rng = self.rng
        box = roof.box
        avoid = list(panels)
        half_w, half_h = box.w / 2 - 8, box.h / 2 - 6
        if rng.random() < 0.4:
            side = float(rng.uniform(7, 9.5))
            chimney = self._free_spot(box, (side, side), (-half_w, half_w, -half_h, half_h), avoid)
            if chimney is not None:
                colour = (150, 84, 64) if rng.random() < 0.5 else (120, 118, 115)
                self.layout.roof_items.append(Item(chimney, _jitter(rng, colour, 0.05), SMOOTH))
                self.layout.roof_casters.append((chimney, float(rng.uniform(8, 14))))
                avoid.append(chimney)
        count = int(rng.integers(1, 3)) if rng.random() < 0.45 else 0
        for _ in range(count):
            size = (float(rng.uniform(7, 10)), float(rng.uniform(8.5, 12)))
            face = 1.0 if rng.random() < 0.5 else -1.0
            region = (-half_w, half_w, *sorted((face * 5.0, face * half_h)))
            skylight = self._free_spot(box, size, region, avoid)
            if skylight is not None:
                self._add_skylight(skylight)
                avoid.append(skylight)

    def _add_skylight(self, box: Box) -> None:
        frame = _jitter(self.rng, (178, 176, 170), 0.05)
        glass = _jitter(self.rng, (44, 52, 66), 0.12)
        self.layout.roof_items.append(Item(box, frame, SMOOTH))
        self.layout.roof_items.append(Item(box.grown(-1.5), glass, SMOOTH))

    def _flat_roof_details(self, roof: Roof, panels: list[Box]) -> None:
        rng = self.rng
        box = roof.box
        avoid = list(panels)
        region = (-box.w / 2 + 8, box.w / 2 - 8, -box.h / 2 + 8, box.h / 2 - 8)
        for _ in range(int(rng.integers(0, 4))):
            size = (float(rng.uniform(10, 24)), float(rng.uniform(10, 20)))
            vent = self._free_spot(box, size, region, avoid)
            if vent is not None:
                self.layout.roof_items.append(
                    Item(vent, _jitter(rng, (196, 196, 192), 0.04), SMOOTH)
                )
                self.layout.roof_casters.append((vent, float(rng.uniform(5, 9))))
                avoid.append(vent)
        for _ in range(int(rng.integers(0, 3))):
            side = float(rng.uniform(8, 12))
            dome = self._free_spot(box, (side, side), region, avoid)
            if dome is not None:
                self._add_skylight(dome)
                avoid.append(dome)

    def _trees_over_panels(self) -> None:
        """Grow trees next to some house roofs so that they hide part of a panel array."""
        rng = self.rng
        for panel, roof_index in zip(self.layout.panels, self.layout.panel_roofs, strict=True):
            if rng.random() > 0.15:
                continue
            roof = self.layout.roofs[roof_index].box
            corners = panel.box.corners()
            reach = np.hypot(corners[:, 0] - roof.cx, corners[:, 1] - roof.cy)
            corner = corners[int(np.argmax(reach))]
            away = (corner - (roof.cx, roof.cy)) / max(float(reach.max()), 1.0)
            radius = float(rng.uniform(20, 38))
            x, y = corner + away * radius * float(rng.uniform(0.3, 0.8))
            self._add_tree(float(x), float(y), radius)


def _gaps_between(lines: list[tuple[float, float, float]]) -> list[tuple[float, float]]:
    """The stretches between consecutive road corridors (asphalt plus sidewalks)."""
    gaps = []
    for (c0, w0, s0), (c1, w1, s1) in itertools.pairwise(lines):
        gaps.append((c0 + w0 / 2 + s0, c1 - w1 / 2 - s1))
    return gaps


# --------------------------------------------------------------------------- rendering


@dataclass
class _Noise:
    """Noise fields shared by the render steps, each (size, size) float32."""

    fine: np.ndarray  # white, unit variance
    leaf: np.ndarray  # slightly blurred white noise, unit variance
    medium: np.ndarray  # value noise in [0, 1], 8 px cells
    coarse: np.ndarray  # value noise in [0, 1], 110 px cells


def _value_noise(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    count = int(size / cell) + 3
    grid = rng.random((count, count), dtype=np.float32)
    position = (np.arange(size, dtype=np.float32) + 0.5) / cell
    index = position.astype(np.int64)
    frac = (position - index).astype(np.float32)
    frac = frac * frac * (3 - 2 * frac)
    upper, lower = grid[index], grid[index + 1]
    top = upper[:, index] * (1 - frac) + upper[:, index + 1] * frac
    bottom = lower[:, index] * (1 - frac) + lower[:, index + 1] * frac
    return np.ascontiguousarray(top * (1 - frac[:, None]) + bottom * frac[:, None], np.float32)


def _make_noise(rng: np.random.Generator, size: int) -> _Noise:
    fine = rng.standard_normal((size, size), dtype=np.float32)
    leaf_img = Image.fromarray(np.clip(128 + 40 * fine, 0, 255).astype(np.uint8))
    leaf = np.asarray(leaf_img.filter(ImageFilter.GaussianBlur(1.1)), np.float32) - 128
    leaf /= max(float(leaf.std()), 1e-6)
    return _Noise(fine, leaf, _value_noise(rng, size, 8), _value_noise(rng, size, 110))


def _polygon(box: Box) -> list[tuple[float, float]]:
    """Pillow polygon of a box: Pillow then fills the pixels whose centres it covers."""
    return [(float(x), float(y)) for x, y in box.corners()]


def _label_map(size: int, boxes: list[Box]) -> np.ndarray:
    """int32 map: 1 + index of the last box covering each pixel, 0 where none does."""
    image = Image.new("I", (size, size), 0)
    draw = ImageDraw.Draw(image)
    for index, box in enumerate(boxes):
        draw.polygon(_polygon(box), fill=index + 1)
    return np.asarray(image, np.int32)


def _swept_mask(
    size: int, casters: list[tuple[Box, float]], sun: tuple[float, float], erase: list[Box]
) -> np.ndarray:
    """Shadow mask in [0, 1]: each box swept away from the sun by its length, minus `erase`."""
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    for box, length in casters:
        shift = (-sun[0] * length, -sun[1] * length)
        corners = _polygon(box)
        for index in range(4):
            a, b = corners[index], corners[(index + 1) % 4]
            draw.polygon(
                [a, b, (b[0] + shift[0], b[1] + shift[1]), (a[0] + shift[0], a[1] + shift[1])],
                fill=255,
            )
    for box in erase:
        draw.polygon(_polygon(box), fill=0)
    soft = image.filter(ImageFilter.GaussianBlur(1.0))
    return np.asarray(soft, np.float32) / 255


def _darken(image: np.ndarray, mask: np.ndarray, strength: float) -> None:
    """Shadow `image` in place where `mask` (0..1) is set, with a bluish cast."""
    tint = np.array([1.0, 0.95, 0.8], np.float32)
    rows, cols = np.nonzero(mask > 1 / 255)
    image[rows, cols] *= 1 - (strength * mask[rows, cols])[:, None] * tint


def _ground(noise: _Noise) -> np.ndarray:
    lawn = np.array([84, 110, 58], np.float32)
    dry = np.array([142, 138, 94], np.float32)
    dryness = np.clip((noise.coarse - 0.5) * 3.0, 0, 1)[..., None]
    base = lawn * (1 - dryness) + dry * dryness
    texture = 1 + 0.07 * noise.leaf + 0.14 * (noise.medium - 0.5)
    return base * texture[..., None]


def _paint_items(image: np.ndarray, items: list[Item], noise: _Noise) -> np.ndarray:
    """Paint flat-coloured boxes over `image`, with per-material fine texture."""
    size = image.shape[0]
    colours = Image.new("RGB", (size, size), (0, 0, 0))
    materials = Image.new("L", (size, size), 255)
    draw_colour, draw_material = ImageDraw.Draw(colours), ImageDraw.Draw(materials)
    for item in items:
        polygon = _polygon(item.box)
        draw_colour.polygon(polygon, fill=item.colour)
        draw_material.polygon(polygon, fill=item.material)
    material = np.asarray(materials)
    rows, cols = np.nonzero(material != 255)
    amplitude = TEXTURE_AMPLITUDE[material[rows, cols]]
    texture = 1 + amplitude * (noise.fine[rows, cols] + 0.5 * noise.medium[rows, cols] - 0.25)
    image[rows, cols] = np.asarray(colours)[rows, cols] * texture[:, None]
    return image


def _paint_roofs(image: np.ndarray, layout: Layout, noise: _Noise) -> None:
    """Shade each roof by its faces' slope to the sun, with tile rows, ridges and gutters."""
    labels = _label_map(layout.size, [roof.box for roof in layout.roofs])
    rows, cols = np.nonzero(labels)
    if rows.size == 0:
        return
    index = labels[rows, cols] - 1
    table = _roof_table(layout.roofs)
    x, y = cols + 0.5 - table["cx"][index], rows + 0.5 - table["cy"][index]
    cos, sin = table["cos"][index], table["sin"][index]
    u, v = x * cos + y * sin, -x * sin + y * cos
    half_w, half_h = table["w"][index] / 2, table["h"][index] / 2
    flat, hip = table["flat"][index], table["hip"][index]
    end_face = hip & (np.abs(u) - (half_w - half_h) > np.abs(v))
    # horizontal direction each face slopes down towards, in image coordinates
    sign_u, sign_v = np.sign(u), np.sign(v)
    dir_x = np.where(end_face, sign_u * cos, -sign_v * sin)
    dir_y = np.where(end_face, sign_u * sin, sign_v * cos)
    pitch = np.where(flat, 0.0, table["pitch"][index])
    sun_x, sun_y = layout.sun
    elevation = layout.sun_elevation
    lit = np.sin(pitch) * math.cos(elevation) * (dir_x * sun_x + dir_y * sun_y) + np.cos(
        pitch
    ) * math.sin(elevation)
    shade = 0.35 + 0.65 * lit / math.sin(elevation)
    from_ridge = np.where(end_face, np.abs(u) - (half_w - half_h), np.abs(v))
    tiles = 1 + 0.07 * np.sin(2 * np.pi * from_ridge / table["course"][index])
    ridge = (from_ridge < 1.2) | (hip & (np.abs(np.abs(u) - (half_w - half_h) - np.abs(v)) < 0.8))
    to_edge = np.minimum(half_w - np.abs(u), half_h - np.abs(v))
    detail = np.where(
        flat,
        1 + 0.1 * noise.fine[rows, cols] + 0.18 * (to_edge < 3),
        tiles * np.where(ridge, 0.82, 1.0) * np.where(to_edge < 1.5, 0.78, 1.0),
    )
    weathering = 1 + 0.12 * (noise.medium[rows, cols] - 0.5) + 0.03 * noise.fine[rows, cols]
    factor = (shade * detail * weathering).astype(np.float32)
    image[rows, cols] = table["colour"][index] * factor[:, None]


def _roof_table(roofs: list[Roof]) -> dict[str, np.ndarray]:
    """Per-roof parameters as arrays, for lookup by pixel label."""
    return {
        "cx": np.array([r.box.cx for r in roofs]),
        "cy": np.array([r.box.cy for r in roofs]),
        "cos": np.array([math.cos(r.box.angle) for r in roofs]),
        "sin": np.array([math.sin(r.box.angle) for r in roofs]),
        "w": np.array([r.box.w for r in roofs]),
        "h": np.array([r.box.h for r in roofs]),
        "pitch": np.array([r.pitch for r in roofs]),
        "flat": np.array([r.kind == "flat" for r in roofs]),
        "hip": np.array([r.kind == "hip" for r in roofs]),
        "course": np.array([2.6 if _luminance(r.colour) < 90 else 3.4 for r in roofs]),
        "colour": np.array([r.colour for r in roofs], np.float32),
    }


def _paint_panels(image: np.ndarray, panels: list[Panel], labels: np.ndarray) -> None:
    """Dark module grids with lighter gaps and frames, a soft sheen and per-module variation."""
    rows, cols = np.nonzero(labels)
    if rows.size == 0:
        return
    index = labels[rows, cols] - 1
    boxes = [p.box for p in panels]
    cx, cy = np.array([b.cx for b in boxes])[index], np.array([b.cy for b in boxes])[index]
    angle = np.array([b.angle for b in boxes])[index]
    width, height = np.array([b.w for b in boxes])[index], np.array([b.h for b in boxes])[index]
    x, y = cols + 0.5 - cx, rows + 0.5 - cy
    a = x * np.cos(angle) + y * np.sin(angle) + width / 2
    b = -x * np.sin(angle) + y * np.cos(angle) + height / 2
    pitch_u = width / np.array([p.modules[0] for p in panels])[index]
    pitch_v = height / np.array([p.modules[1] for p in panels])[index]
    gap = ((a % pitch_u) < 1.0) | ((b % pitch_v) < 1.0) | (a > width - 1) | (b > height - 1)
    module_u, module_v = (a // pitch_u).astype(np.int64), (b // pitch_v).astype(np.int64)
    module_hash = (module_u * 73856093) ^ (module_v * 19349663) ^ (index * 83492791)
    module_tone = 0.95 + 0.1 * ((module_hash % 97) / 96.0)
    sheen = 0.9 + 0.22 * (a / width + b / height) / 2
    colour = np.array([p.colour for p in panels], np.float32)[index]
    cells = colour * (module_tone * sheen)[:, None]
    lines = colour * 1.2 + 42
    image[rows, cols] = np.where(gap[:, None], lines, cells)


def _canopy_layers(layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tree mask, hedge mask (both 0..255 float32) and foliage colour (size, size, 3)."""
    size = layout.size
    trees = Image.new("L", (size, size), 0)
    hedges = Image.new("L", (size, size), 0)
    colours = Image.new("RGB", (size, size), (0, 0, 0))
    draw_tree, draw_hedge = ImageDraw.Draw(trees), ImageDraw.Draw(hedges)
    draw_colour = ImageDraw.Draw(colours)
    for tree in layout.trees:
        for x, y, r in tree.blobs:
            bounds = (x - r, y - r, x + r, y + r)
            draw_tree.ellipse(bounds, fill=255)
            draw_colour.ellipse(bounds, fill=tree.colour)
    for hedge in layout.hedges:
        draw_hedge.polygon(_polygon(hedge), fill=255)
        draw_colour.polygon(_polygon(hedge), fill=(58, 88, 42))
    return (
        np.asarray(trees, np.float32),
        np.asarray(hedges, np.float32),
        np.asarray(colours, np.float32),
    )


def _shifted(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`mask` moved by (dx, dy) pixels, zero-filled."""
    out = np.zeros_like(mask)
    size = mask.shape[0]
    src_y, dst_y = slice(max(-dy, 0), size - max(dy, 0)), slice(max(dy, 0), size - max(-dy, 0))
    src_x, dst_x = slice(max(-dx, 0), size - max(dx, 0)), slice(max(dx, 0), size - max(-dx, 0))
    out[dst_y, dst_x] = mask[src_y, src_x]
    return out


def _paint_canopy(image: np.ndarray, layout: Layout, noise: _Noise) -> np.ndarray:
    """Cast tree and hedge shadows, then paint hill-shaded, leafy canopies. Returns the mask."""
    trees, hedges, colours = _canopy_layers(layout)
    canopy = np.maximum(trees, hedges) > 127
    sun_x, sun_y = layout.sun
    tree_shadow = _shifted(trees, round(-sun_x * 30), round(-sun_y * 30))
    hedge_shadow = _shifted(hedges, round(-sun_x * 10), round(-sun_y * 10))
    shadow_img = Image.fromarray(np.maximum(tree_shadow, hedge_shadow).astype(np.uint8))
    shadow = np.asarray(shadow_img.filter(ImageFilter.GaussianBlur(2.0)), np.float32) / 255
    _darken(image, shadow * ~canopy, 0.5)
    if not canopy.any():
        return canopy
    height_img = Image.fromarray(np.maximum(trees, hedges * 0.5).astype(np.uint8))
    height = np.asarray(height_img.filter(ImageFilter.GaussianBlur(5)), np.float32)
    grad_y, grad_x = np.gradient(height)
    rows, cols = np.nonzero(canopy)
    slope = grad_x[rows, cols] * sun_x + grad_y[rows, cols] * sun_y
    shade = 0.88 + 0.38 * np.clip(-slope / 20, -1, 1)
    clumps = 1 + 0.2 * noise.leaf[rows, cols] + 0.3 * (noise.medium[rows, cols] - 0.5)
    image[rows, cols] = colours[rows, cols] * (shade * clumps)[:, None]
    return canopy


def _finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slight optical blur, then sensor noise; to uint8."""
    rgb = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    blurred = np.asarray(rgb.filter(ImageFilter.GaussianBlur(0.6)), np.float32)
    noisy = blurred + 2.2 * rng.standard_normal(blurred.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _render(layout: Layout, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint the layout; returns the RGB image, the panel label map and the canopy mask."""
    size = layout.size
    noise = _make_noise(rng, size)
    roof_boxes = [roof.box for roof in layout.roofs]
    image = _paint_items(_ground(noise), layout.ground_items, noise)
    _darken(image, _swept_mask(size, layout.ground_casters, layout.sun, roof_boxes), 0.5)
    _paint_roofs(image, layout, noise)
    panel_boxes = [panel.box for panel in layout.panels]
    item_boxes = [item.box for item in layout.roof_items]
    _darken(
        image, _swept_mask(size, layout.roof_casters, layout.sun, panel_boxes + item_boxes), 0.45
    )
    panel_labels = _label_map(size, panel_boxes)
    _paint_panels(image, layout.panels, panel_labels)
    image = _paint_items(image, layout.roof_items, noise)
    canopy = _paint_canopy(image, layout, noise)
    return _finish(image, rng), panel_labels, canopy


def _occluded_fractions(labels: np.ndarray, canopy: np.ndarray, count: int) -> np.ndarray:
    area = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    hidden = np.bincount(labels[canopy].ravel(), minlength=count + 1)[1:]
    return hidden / np.maximum(area, 1)

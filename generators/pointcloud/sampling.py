"""Sampling points on triangle meshes beyond the uniform draw of `synthloom.meshes.MeshSurface`:
Poisson-disk (weighted sample elimination) and single-view partial scans.
"""

from __future__ import annotations

import math

import numpy as np
import trimesh
from scipy.spatial import ConvexHull, cKDTree

from synthloom.meshes import MeshSurface


class MeshSampler(MeshSurface):
    """A mesh's surface with the generator's samplers: uniform (inherited), Poisson-disk, partial scans."""

    def sample_poisson(self, count: int, rng: np.random.Generator, oversample: int = 4, relax: int = 24):
        """Exactly `count` blue-noise samples: from `oversample * count` uniform candidates, the
        largest-radius maximal Poisson-disk subset with at least `count` points (`maximal_disk_set`,
        radius found by bisection), weighted sample elimination (Yuksel 2015) of any excess, then
        `relax` rounds of `relax_on_surface`, which push the closest pairs apart along the surface.
        Normals and colours are those of the face and place each point ends on.

        On the 20 CGAL meshes at 2,048 points, closest-neighbour min/mean was 0.893 for the disk set
        from 8x candidates alone and 0.954 with these defaults in about the same time; point-cloud-utils
        at equal count gives 0.943 in 4.5x our time (benchmarks/RESULTS.md, "Poisson disk at equal
        regularity"). Thin parts and sharp creases keep some close pairs: per mesh 0.92-0.96."""
        face, u, v = self.draw_uniform(count * oversample, rng)
        candidates = self.at(face, u, v)[0]
        keep, tree = poisson_disk_subset(candidates, count, self.area, rng)
        if relax > 0 and len(keep) > 1:
            points, faces = relax_on_surface(self, candidates[keep], face[keep], tree, face, relax)
            return self.at(faces, *self.barycentric(faces, points))
        return self.at(face[keep], u[keep], v[keep])

    def sample_partial_scan(self, count: int, rng: np.random.Generator, poisson: bool = False,
                            oversample: int = 4, max_candidates: int = 64, max_cameras: int = 8):
        """`count` distinct points seen from one random camera: (points, normals, colors, info).

        Candidates are drawn uniformly and kept where hidden point removal sees them from a camera
        3 radii from the centre. Where too few are seen, more candidates are drawn for the same
        camera (up to `max_candidates * count`); only when even that shows fewer than `count`
        points is the camera drawn again (at most `max_cameras` times), so no point is ever
        repeated. `poisson` thins the visible candidates by weighted sample elimination instead
        of picking a uniform subset. Everything is drawn from `rng`: the same seed, the same scan.
        """
        want = count * oversample if poisson else count  # visible candidates we would like
        cap = count * max_candidates
        most_seen = 0
        for draw in range(1, max_cameras + 1):
            candidates = min(4 * want, cap)  # a camera typically sees 25-45 % of a closed surface
            points, normals, colors = self.sample_uniform(candidates, rng)
            direction = rng.standard_normal(3)
            direction /= np.linalg.norm(direction)
            camera = self.center + direction * self.radius * 3.0
            visible = visible_from(points, camera)
            while len(visible) < want and candidates < cap:
                # Enough candidates for `want` at the fraction seen so far, with a 25 % margin.
                fraction = max(len(visible), 1) / candidates
                candidates = min(cap, math.ceil(1.25 * want / fraction))
                points, normals, colors = self.sample_uniform(candidates, rng)
                visible = visible_from(points, camera)
            most_seen = max(most_seen, len(visible))
            if len(visible) >= count:
                break
        else:
            raise TooFewVisible(f"fewer than {count} of {cap} candidate points visible from "
                                f"{max_cameras} random cameras (at most {most_seen})")
        fraction = len(visible) / candidates
        if poisson:
            # The visible share of the candidates estimates the visible share of the area.
            chosen = visible[weighted_sample_elimination(points[visible], count, self.area * fraction)]
        else:
            chosen = rng.choice(visible, size=count, replace=False)
        info = {"camera_direction": [round(float(x), 6) for x in direction], "camera_draws": draw,
                "candidates": candidates, "visible_fraction": round(fraction, 4)}
        return points[chosen], normals[chosen], None if colors is None else colors[chosen], info


class TooFewVisible(ValueError):
    """A partial scan found fewer visible points than asked for from every camera it tried."""


def maximal_disk_set(total: int, heads: np.ndarray, tails: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Indices of a maximal independent set of the conflict graph (directed edges heads -> tails, both
    ways): the points no two of which are closer than the graph's radius, taken greedily in `priority`
    order. Luby's parallel rounds keep it vectorised (a point goes in when it has the lowest priority
    among its undecided neighbours, its neighbours go out), which gives the same set as visiting the
    points one by one in priority order, without a Python loop per point."""
    state = np.zeros(total, dtype=np.int8)  # 0 undecided, 1 in, -1 out
    while (undecided := state == 0).any():
        live = undecided[heads] & undecided[tails]
        heads, tails = heads[live], tails[live]
        lowest_neighbour = np.full(total, np.inf)
        np.minimum.at(lowest_neighbour, heads, priority[tails])
        chosen = undecided & (priority < lowest_neighbour)
        state[chosen] = 1
        beaten = np.zeros(total, dtype=bool)
        beaten[tails[chosen[heads]]] = True
        state[beaten & (state == 0)] = -1
    return np.flatnonzero(state == 1)


def poisson_disk_subset(points: np.ndarray, count: int, area: float, rng: np.random.Generator,
                        steps: int = 8) -> tuple[np.ndarray, cKDTree]:
    """Indices of exactly `count` of `points` (uniform samples of a surface of `area`): the maximal
    Poisson-disk set at the largest radius (of `steps` bisection steps) that still keeps `count`,
    thinned to `count` by weighted sample elimination. Removing points never brings two closer, so
    the kept ones stay at least that radius apart. Also returns the k-d tree of `points`."""
    total = len(points)
    tree = cKDTree(points)
    if count >= total:
        return np.arange(total), tree
    r_max = math.sqrt(area / (2.0 * math.sqrt(3.0) * count))  # the densest packing's radius
    low, high = 0.3 * r_max, 1.6 * r_max
    pairs = tree.query_pairs(high, output_type="ndarray")  # every radius tried, at once
    distance = np.linalg.norm(points[pairs[:, 0]] - points[pairs[:, 1]], axis=1)
    order = np.argsort(distance, kind="stable")
    pairs, distance = pairs[order], distance[order]
    priority = rng.random(total)
    best = None
    for _ in range(steps):
        radius = (low + high) / 2.0
        within = pairs[:np.searchsorted(distance, radius)]
        kept = maximal_disk_set(total, np.concatenate([within[:, 0], within[:, 1]]),
                                np.concatenate([within[:, 1], within[:, 0]]), priority)
        if len(kept) >= count:
            low, best = radius, kept
        else:
            high = radius
    if best is None:  # even 0.3 r_max keeps too few (a degenerate surface): eliminate from all
        best = np.arange(total)
    if len(best) > count:
        best = best[weighted_sample_elimination(points[best], count, area)]
    return best, tree


def relax_on_surface(surface: MeshSurface, points: np.ndarray, faces: np.ndarray, candidates: cKDTree,
                     candidate_faces: np.ndarray, rounds: int, spread: float = 0.96, step: float = 2.0,
                     near: int = 4, retarget: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """`points` (on `faces` of `surface`) after `rounds` of pushing apart every pair closer than
    `spread` times the mean closest-neighbour distance: (points, faces).

    Closest-neighbour min/mean is bounded by the closest pairs, so only those move. Spreading all
    points towards a hexagonal spacing (a plain repulsion) raised the mean faster than the minimum
    and lowered min/mean; pushing only the pairs under the target raises the minimum towards it. Each
    point of such a pair moves away from the other by `step` / 2 of the shortfall (over-relaxed:
    2.0 converged faster than 1.0 or 1.5), summed over its pairs, in its face's plane. It is put
    back on the mesh at the closest point of its own face and of the faces of its `near` nearest
    `candidates` (uniform samples of the surface, on `candidate_faces`), so it can cross onto other
    faces without a search over the whole mesh. The mean spacing grows a little as pairs open up:
    the target follows it every `retarget` rounds (every round: a third more time for +0.003 in a
    scratch run at 20 rounds). No randomness: the same input, the same output."""
    near = min(near, candidates.n)
    points, faces = points.copy(), faces.copy()
    for i in range(rounds):
        tree = cKDTree(points, balanced_tree=False)
        if i % retarget == 0:
            target = spread * tree.query(points, k=2)[0][:, 1].mean()
        pairs = tree.query_pairs(target, output_type="ndarray")
        if len(pairs) == 0:
            break
        offset = points[pairs[:, 0]] - points[pairs[:, 1]]
        distance = np.linalg.norm(offset, axis=1)
        push = (0.5 * step * (target - distance) / np.maximum(distance, 1e-12))[:, None] * offset
        heads = np.concatenate([pairs[:, 0], pairs[:, 1]])
        pushes = np.concatenate([push, -push])
        moved = np.unique(heads)
        index = np.searchsorted(moved, heads)
        move = np.stack([np.bincount(index, weights=pushes[:, k], minlength=len(moved)) for k in range(3)], axis=1)
        normal = surface.face_normals[faces[moved]]
        move -= (move * normal).sum(axis=1, keepdims=True) * normal  # stay in the tangent plane
        target_points = points[moved] + move
        options = np.concatenate([faces[moved, None],
                                  candidate_faces[candidates.query(target_points, k=near)[1]]], axis=1)
        corners = surface.origins[options][:, :, None, :] + np.stack(
            [np.zeros_like(surface.edge1[options]), surface.edge1[options], surface.edge2[options]], axis=2)
        closest = trimesh.triangles.closest_point(corners.reshape(-1, 3, 3),
                                                  np.repeat(target_points, near + 1, axis=0)).reshape(-1, near + 1, 3)
        best = np.linalg.norm(closest - target_points[:, None], axis=2).argmin(axis=1)
        rows = np.arange(len(moved))
        points[moved], faces[moved] = closest[rows, best], options[rows, best]
    return points, faces


def weighted_sample_elimination(points: np.ndarray, count: int, area: float) -> np.ndarray:
    """Sorted indices of the `count` of `points` kept by Yuksel's weighted sample elimination on a
    surface of `area`.

    Yuksel's greedy drops the most crowded point (largest weight), lowers its neighbours' weights,
    and repeats; cyCodeBase runs it with a heap, one point at a time. We run it in vectorised
    rounds, because a heap loop in Python was slower than point-cloud-utils' C++. A point whose
    weight beats every live neighbour's keeps that weight until it is dropped (only a neighbour's
    removal changes it, and no neighbour can go first), so all such local maxima can go together.
    Each round drops only the local maxima among the `need` heaviest live points, so points in
    sparse regions are not dropped early and the count is exact. On the CGAL meshes this keeps
    the same points as the one-at-a-time greedy (tests/test_sampling.py checks it against one).
    """
    total = len(points)
    if count >= total:
        return np.arange(total)
    # Maximal Poisson-disk radius for `count` points on a 2-D surface of this area.
    r_max = math.sqrt(area / (2.0 * math.sqrt(3.0) * count))
    r_min = r_max * (1.0 - (count / total) ** 1.5) * 0.65
    pairs = cKDTree(points).query_pairs(2.0 * r_max, output_type="ndarray")
    dist = np.linalg.norm(points[pairs[:, 0]] - points[pairs[:, 1]], axis=1)
    weight = (1.0 - np.maximum(dist, r_min) / (2.0 * r_max)) ** 8
    # Directed edges both ways; after each round only edges between live points remain.
    heads = np.concatenate([pairs[:, 0], pairs[:, 1]])
    tails = np.concatenate([pairs[:, 1], pairs[:, 0]])
    weights = np.concatenate([weight, weight])
    score = np.bincount(heads, weights=weights, minlength=total)
    alive = np.ones(total, dtype=bool)
    need = total - count
    while need > 0:
        neighbour_best = np.full(total, -np.inf)
        np.maximum.at(neighbour_best, heads, score[tails])
        live = np.flatnonzero(alive)
        live_score = score[live]
        cutoff = np.partition(live_score, len(live) - need)[len(live) - need]
        drop = live[(live_score > neighbour_best[live]) & (live_score >= cutoff)]
        if len(drop) > need:  # ties at the cutoff: heaviest first, then lowest index, as a heap would
            drop = drop[np.argsort(-score[drop], kind="stable")[:need]]
        if len(drop) == 0:  # only exact ties between neighbours left: drop the heaviest alone
            drop = live[[int(np.argmax(live_score))]]
        alive[drop] = False
        need -= len(drop)
        from_dropped = ~alive[heads]
        score -= np.bincount(tails[from_dropped], weights=weights[from_dropped], minlength=total)
        between_live = alive[heads] & alive[tails]
        heads, tails, weights = heads[between_live], tails[between_live], weights[between_live]
    return np.flatnonzero(alive)


def visible_from(points: np.ndarray, camera: np.ndarray, radius_scale: float = 100.0) -> np.ndarray:
    """Indices of points visible from `camera` by hidden point removal (Katz et al. 2007),
    the operator open3d's `hidden_point_removal` implements."""
    rel = points - camera
    norm = np.linalg.norm(rel, axis=1, keepdims=True)
    norm = np.maximum(norm, 1e-12)
    radius = float(norm.max()) * radius_scale
    flipped = rel + 2.0 * (radius - norm) * rel / norm
    hull = ConvexHull(np.vstack([flipped, np.zeros((1, 3))]))
    visible = hull.vertices[hull.vertices < len(points)]
    return np.sort(visible)


def random_rotation(rng: np.random.Generator, mode: str) -> np.ndarray:
    """A 3x3 rotation: identity, about +z, or uniform over SO(3) (QR of a Gaussian matrix)."""
    if mode == "none":
        return np.eye(3)
    if mode == "z":
        angle = rng.uniform(0.0, 2.0 * math.pi)
        c, s = math.cos(angle), math.sin(angle)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))  # make the factorisation unique -> Haar-uniform
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q

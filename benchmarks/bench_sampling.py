"""Point sampling speed, each side against a baseline measured in the same run.

1. Uniform: synthloom's MeshSampler vs trimesh.sample.sample_surface. Same meshes (the CGAL
   sample meshes from `make meshes` plus trimesh primitives), same number of clouds and points.
   Our timing includes building the sampler for each mesh once, as a build does.
2. Poisson disk: MeshSampler.sample_poisson (exact count) vs point-cloud-utils'
   sample_mesh_poisson_disk (the `bench` extra), one cloud per CGAL mesh per repeat, at each
   --poisson-points size: pcu as its docs call it (a count, which returns ~1.4x it) and pcu at equal
   count (its radius mode, searched until it returns count..1.01x count; or to 1.05x, one call fewer,
   and a random subset of exactly count), against ours at four settings and our method of before (the
   disk set without relaxation). Our timing includes building the sampler on every call; pcu's
   includes turning barycentric coordinates into points. Repeats alternate the order and use a new
   seed each; the best time of each side per mesh is kept. Prints per side the counts returned, the
   regularity (closest-neighbour distance: min / mean, 1 is a perfect grid; mean over meshes and
   seeds with a 95 % CI) and its time / ours (the defaults) per mesh: time against regularity.

    python benchmarks/bench_sampling.py [--clouds 40] [--points 2048] [--poisson-points 2048,8192]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, environment  # noqa: E402

from synthloom.generators.pointcloud.sampling import MeshSampler  # noqa: E402
from synthloom.evaluators.augment import t_interval  # noqa: E402
from synthloom.meshes import load_mesh_file  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OURS = "synthloom sample_poisson (defaults: oversample=4, relax=24)"
PEER = "pcu at equal count (radius search to 1.00-1.01x)"


def cgal_meshes() -> list[tuple[str, trimesh.Trimesh]]:
    return [(p.name, load_mesh_file(p)) for p in sorted((REPO / "data" / "cgal-meshes").rglob("*.*"))
            if p.suffix in (".off", ".ply", ".stl")]


def meshes() -> list[tuple[str, trimesh.Trimesh]]:
    return cgal_meshes() + [("icosphere-5", trimesh.creation.icosphere(subdivisions=5)),
                            ("torus", trimesh.creation.torus(0.5, 0.2)), ("box", trimesh.creation.box())]


def bench_uniform(args) -> None:
    items = meshes()
    faces = sum(len(m.faces) for _, m in items)

    def ours():
        for k, (_, mesh) in enumerate(items):
            sampler = MeshSampler(mesh)
            rng = np.random.default_rng(k)
            for _ in range(args.clouds):
                sampler.sample_uniform(args.points, rng)

    def baseline():
        for k, (_, mesh) in enumerate(items):
            mesh = mesh.copy()  # no cached per-face data carried over from an earlier repeat
            for c in range(args.clouds):
                trimesh.sample.sample_surface(mesh, args.points, seed=k * 1000 + c)

    total_points = len(items) * args.clouds * args.points
    t_base = best_of(args.repeats, baseline)
    t_ours = best_of(args.repeats, ours)
    print(f"{len(items)} meshes ({faces} faces), {args.clouds} clouds x {args.points} points each, best of {args.repeats}")
    print(f"trimesh.sample.sample_surface: {total_points / t_base:,.0f} points/s")
    print(f"synthloom MeshSampler.sample_uniform: {total_points / t_ours:,.0f} points/s")
    print(f"ratio ours/trimesh: {t_base / t_ours:.2f}")


def regularity(points: np.ndarray) -> float:
    closest = cKDTree(points).query(points, k=2)[0][:, 1]
    return float(closest.min() / closest.mean())


def pcu_at_count(pcu, v, f, area, count, seed, tolerance=0.01):
    """point-cloud-utils' sampler at (almost) exactly `count` points: its count mode returns ~1.4x the
    count, so search its `radius` mode (its guaranteed minimum distance) until it returns
    count..(1 + tolerance)x count. The count of a disk set falls as 1 / radius^2, so each next radius
    is that power law's guess for 1 + tolerance / 2 times the count, kept inside the bracket found so
    far (bisection where it falls outside): 3-6 calls where plain bisection took up to 12.
    Returns (points, calls)."""
    radius = np.sqrt(area / (2.0 * np.sqrt(3.0) * count))
    low, high, best, calls = 0.0, np.inf, None, 0
    while calls < 20 and (best is None or len(best[0]) > (1 + tolerance) * count):
        fi, bc = pcu.sample_mesh_poisson_disk(v, f, -1, radius=radius, random_seed=seed)
        calls += 1
        if len(fi) >= count:
            low, best = radius, (fi, bc)
        else:
            high = radius
        guess = radius * np.sqrt(max(len(fi), 1) / ((1 + tolerance / 2) * count))
        radius = guess if low < guess < high else (low + high) / 2 if np.isfinite(high) else 2 * radius
    return pcu.interpolate_barycentric_coords(f, best[0], best[1], v), calls


def bench_poisson(args) -> None:
    try:
        import point_cloud_utils as pcu
    except ImportError:
        raise SystemExit("point-cloud-utils is missing: pip install -e '.[bench]' (the Poisson baseline)") from None
    items = [(name, np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int32), m)
             for name, m in cgal_meshes()]
    print(f"Poisson disk: {len(items)} CGAL meshes, one cloud per mesh per repeat, "
          f"{args.repeats} interleaved repeats, best time of each side per mesh")
    for count in args.poisson_points:
        def pcu_count_mode(k, repeat, mesh, v, f):
            fi, bc = pcu.sample_mesh_poisson_disk(v, f, count, random_seed=1 + k * 1000 + repeat)
            return pcu.interpolate_barycentric_coords(f, fi, bc, v)

        def pcu_equal_count(k, repeat, mesh, v, f):
            return pcu_at_count(pcu, v, f, mesh.area, count, 1 + k * 1000 + repeat)[0]

        def pcu_subset_of_near_count(k, repeat, mesh, v, f):
            # One call fewer: within 1.05x the count, then a seeded random subset of exactly count.
            points = pcu_at_count(pcu, v, f, mesh.area, count, 1 + k * 1000 + repeat, tolerance=0.05)[0]
            keep = np.random.default_rng(k * 1000 + repeat).choice(len(points), count, replace=False)
            return points[keep]

        def ours(oversample, relax):
            def run(k, repeat, mesh, v, f):
                return MeshSampler(mesh).sample_poisson(count, np.random.default_rng(k * 1000 + repeat),
                                                        oversample=oversample, relax=relax)[0]
            return run

        sides = {"pcu count mode (its docs' call)": pcu_count_mode,
                 PEER: pcu_equal_count,
                 "pcu at 1.00-1.05x, random subset to the count": pcu_subset_of_near_count,
                 "synthloom disk set + elimination (before: oversample=8, relax=0)": ours(8, 0),
                 "synthloom sample_poisson(oversample=4, relax=8)": ours(4, 8),
                 "synthloom sample_poisson(oversample=4, relax=16)": ours(4, 16),
                 OURS: ours(4, 24),
                 "synthloom sample_poisson(oversample=4, relax=40)": ours(4, 40)}
        times = {name: np.full(len(items), np.inf) for name in sides}
        regs = {name: np.zeros((args.repeats, len(items))) for name in sides}  # each repeat a new seed
        sizes = {name: np.zeros((args.repeats, len(items))) for name in sides}
        for repeat in range(args.repeats):
            order = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
            for k, (_, v, f, mesh) in enumerate(items):
                for name in order:
                    start = time.perf_counter()
                    cloud = sides[name](k, repeat, mesh, v, f)
                    times[name][k] = min(times[name][k], time.perf_counter() - start)
                    regs[name][repeat, k] = regularity(cloud)
                    sizes[name][repeat, k] = len(cloud) / count
        print(f"  {count} points requested. Regularity = closest-neighbour min/mean (1 = perfect grid): mean over "
              f"meshes and seeds, its 95 % CI over the {len(items)} per-mesh means, [range of the per-mesh means]")
        ours_times = times[OURS]
        for name in sides:
            per_mesh = regs[name].mean(axis=0)
            half = t_interval(per_mesh)["ci_high"] - per_mesh.mean()
            ratio = times[name] / ours_times
            print(f"    {name}: total {times[name].sum():.2f} s, returned {sizes[name].min():.3f}-{sizes[name].max():.3f}x "
                  f"the count, regularity {per_mesh.mean():.3f} ±{half:.3f} [{per_mesh.min():.3f}-{per_mesh.max():.3f}], "
                  f"its time / ours per mesh: median {np.median(ratio):.2f} [{ratio.min():.2f}-{ratio.max():.2f}]")
        peer = PEER
        peer_regs = regs[peer].mean(axis=0)
        print(f"  {peer} against each of our settings (time vs regularity):")
        for name in [n for n in sides if n.startswith("synthloom")]:
            ratio = times[peer] / times[name]
            above = int((regs[name].mean(axis=0) >= peer_regs).sum())
            print(f"    {name}: regularity {regs[name].mean():.3f} vs {peer_regs.mean():.3f}, as regular or more on "
                  f"{above} of {len(items)} meshes; pcu's time / ours per mesh: median {np.median(ratio):.2f} "
                  f"[{ratio.min():.2f}-{ratio.max():.2f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clouds", type=int, default=40, help="uniform: clouds drawn per mesh")
    parser.add_argument("--points", type=int, default=2048, help="uniform: points per cloud")
    parser.add_argument("--poisson-points", type=lambda s: [int(x) for x in s.split(",")], default=[2048, 8192],
                        help="Poisson: comma-separated point counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["uniform", "poisson"], help="run one of the two comparisons")
    args = parser.parse_args()
    print(environment())
    if args.only != "poisson":
        bench_uniform(args)
    if args.only != "uniform":
        bench_poisson(args)


if __name__ == "__main__":
    main()

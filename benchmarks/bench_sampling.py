"""Point sampling speed, each side against a baseline measured in the same run.

1. Uniform: synthloom's MeshSampler vs trimesh.sample.sample_surface. Same meshes (the CGAL
   sample meshes from `make meshes` plus trimesh primitives), same number of clouds and points.
   Our timing includes building the sampler for each mesh once, as a build does.
2. Poisson disk: MeshSampler.sample_poisson (exact count) vs point-cloud-utils'
   sample_mesh_poisson_disk (the `bench` extra), one cloud per CGAL mesh per repeat, at each
   --poisson-points size. Our timing includes building the sampler on every call; theirs includes
   turning barycentric coordinates into points. Repeats alternate the two sides; the best total of
   each is kept. Prints the ratio pcu time / our time (>= 1: ours is faster), the counts each side
   returned, and the regularity of both (closest-neighbour distance: min / mean, 1 is a perfect grid).

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
from synthloom.meshes import load_mesh_file  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


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


def bench_poisson(args) -> None:
    try:
        import point_cloud_utils as pcu
    except ImportError:
        raise SystemExit("point-cloud-utils is missing: pip install -e '.[bench]' (the Poisson baseline)") from None
    items = [(name, np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int32), m)
             for name, m in cgal_meshes()]
    print(f"Poisson disk: {len(items)} CGAL meshes, one cloud per mesh per repeat, "
          f"{args.repeats} interleaved repeats, best total of each side")
    for count in args.poisson_points:
        def theirs(repeat):
            out = []
            for k, (_, v, f, _) in enumerate(items):
                fi, bc = pcu.sample_mesh_poisson_disk(v, f, count, random_seed=1 + k * 1000 + repeat)
                out.append(pcu.interpolate_barycentric_coords(f, fi, bc, v))
            return out

        def ours(repeat):
            return [MeshSampler(mesh).sample_poisson(count, np.random.default_rng(k * 1000 + repeat))[0]
                    for k, (_, _, _, mesh) in enumerate(items)]

        best = {"pcu": float("inf"), "ours": float("inf")}
        clouds = {}
        for repeat in range(args.repeats):
            sides = [("pcu", theirs), ("ours", ours)]
            for name, fn in sides if repeat % 2 == 0 else sides[::-1]:
                start = time.perf_counter()
                clouds[name] = fn(repeat)
                best[name] = min(best[name], time.perf_counter() - start)
        counts = {name: [len(c) / count for c in out] for name, out in clouds.items()}
        reg = {name: np.mean([regularity(c) for c in out]) for name, out in clouds.items()}
        print(f"  {count} points requested:")
        for name, label in (("pcu", "point-cloud-utils sample_mesh_poisson_disk"),
                            ("ours", "synthloom MeshSampler.sample_poisson")):
            print(f"    {label}: {best[name]:.3f} s, returned {min(counts[name]):.2f}-{max(counts[name]):.2f}x "
                  f"the count, closest-neighbour min/mean {reg[name]:.3f}")
        print(f"    ratio pcu time / our time at {count}: {best['pcu'] / best['ours']:.2f}")


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

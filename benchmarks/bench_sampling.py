"""Point sampling throughput: synthloom's MeshSampler vs trimesh.sample.sample_surface.

Same meshes (the CGAL sample meshes from `make meshes` plus trimesh primitives), same
number of clouds and points, same run. Our timing includes building the sampler for
each mesh once, as a build does. Prints points/s for both and the ratio ours/trimesh.

    python benchmarks/bench_sampling.py [--clouds 40] [--points 2048]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import trimesh

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, environment  # noqa: E402

from synthloom.generators.mesh_sampling import MeshSampler  # noqa: E402
from synthloom.generators.pointcloud import load_mesh_file  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def meshes() -> list[tuple[str, trimesh.Trimesh]]:
    found = [(p.name, load_mesh_file(p)) for p in sorted((REPO / "data" / "cgal-meshes").rglob("*.*"))
             if p.suffix in (".off", ".ply", ".stl")]
    found += [("icosphere-5", trimesh.creation.icosphere(subdivisions=5)),
              ("torus", trimesh.creation.torus(0.5, 0.2)), ("box", trimesh.creation.box())]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clouds", type=int, default=40, help="clouds drawn per mesh")
    parser.add_argument("--points", type=int, default=2048, help="points per cloud")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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
    print(environment())
    print(f"{len(items)} meshes ({faces} faces), {args.clouds} clouds x {args.points} points each, best of {args.repeats}")
    print(f"trimesh.sample.sample_surface: {total_points / t_base:,.0f} points/s")
    print(f"synthloom MeshSampler.sample_uniform: {total_points / t_ours:,.0f} points/s")
    print(f"ratio ours/trimesh: {t_base / t_ours:.2f}")


if __name__ == "__main__":
    main()

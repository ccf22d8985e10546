"""Render-environment half of `profile_render.py`: the same scenes under several Cycles settings.

Run by `profile_render.py` as `.venv-render/bin/python benchmarks/render_variants.py request.json
variants.json` with `generators/blender/workers` and `generators/workers` on PYTHONPATH. For each frame the
scene (objects, lights, camera) is built once from the sample seed, then rendered under every variant in turn (each
over the worker's settings for the request's quality); prints, per variant, the
mean wall and CPU seconds (all threads: Cycles, OIDN) of BlenderProc's render call over frames 2.. (the
first loads meshes) and the mean PSNR of its RGB against the first variant's (the reference).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np
import render_blender


def apply(bpy, settings: dict) -> None:
    scene = bpy.context.scene
    cycles = scene.cycles
    for key, value in settings.items():
        if key == "denoise":  # Cycles' integrated denoiser (quality fast's)
            cycles.use_denoising = bpy.context.view_layer.cycles.use_denoising = value
        elif key == "compositor_denoise":  # BlenderProc's "INTEL" Denoise node (quality blenderproc's), muted or not
            for node in scene.node_tree.nodes:
                if node.bl_idname == "CompositorNodeDenoise":
                    node.mute = not value
        elif key == "distribution":  # Principled BSDF microfacet model of every material
            for material in bpy.data.materials:
                for node in (material.node_tree.nodes if material.node_tree else []):
                    if node.bl_idname == "ShaderNodeBsdfPrincipled":
                        node.distribution = value
        elif key == "world_sampling":
            scene.world.cycles.sampling_method = value
        elif key == "render_seed":  # handled by the render call (independent noise, as the generator's param)
            pass
        else:  # any other Cycles scene setting by name: samples, use_light_tree, denoising_quality...
            setattr(cycles, key, value)


def expand(variant: dict) -> dict:
    """`bounces: n` is max, diffuse and glossy bounces at n: spelled out, so that resetting a variant to the
    worker's settings (a dict of each key's starting value) cannot undo it, whatever the keys' order."""
    variant = dict(variant)
    if "bounces" in variant:
        bounces = variant.pop("bounces")
        variant = {"max_bounces": bounces, "diffuse_bounces": bounces, "glossy_bounces": bounces, **variant}
    return variant


def current(bpy, key: str, quality: str):
    """The value of a setting `apply` knows, as the worker configured it (what a variant is reset to)."""
    scene = bpy.context.scene
    if key == "denoise":
        return scene.cycles.use_denoising
    if key == "compositor_denoise":
        return any(n.bl_idname == "CompositorNodeDenoise" and not n.mute for n in scene.node_tree.nodes)
    if key == "distribution":  # materials are made per frame; the worker's choice by quality
        return "GGX" if quality == "fast" else "MULTI_GGX"
    if key == "world_sampling":
        return scene.world.cycles.sampling_method
    if key == "render_seed":
        return 0
    return getattr(scene.cycles, key)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def main() -> None:
    request = json.load(open(sys.argv[1]))
    variants = json.load(open(sys.argv[2]))
    renderer = render_blender.Renderer(request)
    import bpy

    # Every variant starts from the worker's own settings for its quality (fast, blenderproc, reference).
    keys = {"samples", "distribution", "render_seed"} | {key for variant in variants for key in expand(variant)}
    base = {key: current(bpy, key, request["params"]["quality"]) for key in sorted(keys)}
    results: dict[str, list] = {json.dumps(v): [] for v in variants}
    for index, seed in enumerate(request["seeds"]):
        rng = np.random.default_rng(seed)
        placed, _ = renderer.place_objects(rng)
        renderer.light_scene(rng)
        for _ in range(request["params"]["max_camera_tries"]):
            K, cam_to_world, _ = renderer.sample_camera(rng, placed)
            if any(m.sum() >= request["params"]["min_visible_pixels"] for m in renderer.silhouettes(placed, K, cam_to_world)):
                break
        reference = None
        for variant in variants:
            settings = {**base, **expand(variant)}
            apply(bpy, settings)
            for key, value in settings.items():  # every Cycles setting is what the variant asked for
                have = getattr(bpy.context.scene.cycles, key, value)
                if have != value and not (isinstance(value, float) and math.isclose(have, value, rel_tol=1e-6)):
                    raise SystemExit(f"{json.dumps(variant)}: cycles.{key} is {have}, not {value}")
            clock, cpu = time.perf_counter(), time.process_time()
            output = renderer.render(K, cam_to_world, seed + 1_000_003 * settings["render_seed"])
            image = np.asarray(output["colors"])[:, :, :3]
            wall, cpu = time.perf_counter() - clock, time.process_time() - cpu
            reference = image if reference is None else reference
            if index > 0:
                results[json.dumps(variant)].append((wall, cpu, psnr(image, reference)))
        renderer.clear_frame()
    for name, values in results.items():
        values = np.array(values)
        print(f"{name:72s} wall {values[:, 0].mean():.3f} s, CPU {values[:, 1].mean():.3f} s, "
              f"PSNR vs first {values[:, 2].mean():.1f} dB")
    sys.stdout.flush()
    os._exit(0)  # bpy can crash while tearing down


if __name__ == "__main__":
    main()

#!/bin/bash
# BlenderProc's plateau and ours' bias, attributed: variants over quality blenderproc's settings, same scenes
# (RESULTS.md, "Rendering at equal quality"). Run from the repository root; ~6 min on 2 cores:
#   OMP_NUM_THREADS=1 flock /tmp/synthloom-heavy.lock bash benchmarks/render_attribution.sh
cd "$(dirname "$0")/.."
FULL='"max_bounces": 12, "diffuse_bounces": 4, "glossy_bounces": 4, "transmission_bounces": 12, "caustics_reflective": true, "caustics_refractive": true, "use_light_tree": true'
FAST='"adaptive_threshold": 0.05, "compositor_denoise": false, "denoise": true, "denoiser": "OPENIMAGEDENOISE", "denoising_input_passes": "RGB_ALBEDO_NORMAL", "denoising_prefilter": "FAST", "bounces": 2, "ao_bounces_render": 0, "transmission_bounces": 0, "transparent_max_bounces": 2, "caustics_reflective": false, "caustics_refractive": false'
exec .venv/bin/python benchmarks/profile_render.py --quality blenderproc --frames 5 \
  "{\"samples\": 512, \"use_adaptive_sampling\": false, \"compositor_denoise\": false, $FULL, \"render_seed\": 1}" \
  '{"samples": 512, "use_adaptive_sampling": false, "compositor_denoise": false, "render_seed": 2}' \
  '{"samples": 4}' '{"samples": 16}' '{"samples": 64}' \
  '{"samples": 4, "glossy_bounces": 3}' '{"samples": 16, "glossy_bounces": 3}' '{"samples": 64, "glossy_bounces": 3}' \
  "{\"samples\": 16, $FULL}" \
  '{"samples": 16, "compositor_denoise": false, "denoise": true, "denoising_prefilter": "FAST"}' \
  "{\"samples\": 1, $FAST, \"distribution\": \"GGX\"}" \
  "{\"samples\": 4, $FAST, \"distribution\": \"GGX\"}" \
  "{\"samples\": 16, $FAST, \"distribution\": \"GGX\"}" \
  "{\"samples\": 4, $FAST, \"distribution\": \"MULTI_GGX\"}" \
  "{\"samples\": 4, $FAST, \"bounces\": 4, \"distribution\": \"GGX\"}"

"""The `blender` generator's worker: renders one shard with BlenderProc in the render environment.

Run by `synthloom.generators.blender` as `.venv-render/bin/python render_blender.py request.json`, one
process per shard (BlenderProc's memory grows over long loops; a fresh process per shard keeps it flat).
Imports only the render environment's packages (bpy, blenderproc, numpy<2, opencv, trimesh) and the
protocol helper `synthloom_worker`.

Every random choice of a frame comes from `numpy.random.default_rng(sample seed)` and is written to the
row's `params` JSON, so a row can be re-rendered from its seed and params alone.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import time

import numpy as np

import synthloom_worker
from synthloom_worker import WorkerFailure

OBJECT_PASS_BASE = 1        # objects of a frame: pass_index 1..N (their order in the frame)
OTHER_PASS_BASE = 10_000    # ground and distractors: never an object instance
HDRI_MAP_RESOLUTION = 256  # world importance map of an HDRI (see Renderer.set_hdri)
PRIMITIVES = ("CUBE", "CYLINDER", "CONE", "SPHERE", "MONKEY")


def _u(rng, bounds) -> float:
    low, high = bounds
    return float(rng.uniform(low, high)) if high > low else float(low)


def _random_rotation(rng, mode: str) -> np.ndarray:
    """A uniformly random rotation (so3: a random unit quaternion), or a random turn about z."""
    if mode == "z":
        angle = rng.uniform(0, 2 * math.pi)
        c, s = math.cos(angle), math.sin(angle)
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _random_color(rng) -> list[float]:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.2, 1.0), rng.uniform(0.15, 1.0))
    return [r, g, b]


class Renderer:
    """One BlenderProc session: scene-independent setup once, then `render_frame` per sample."""

    def __init__(self, request: dict):
        from bproc_inprocess import RenderEnvMissing, import_blenderproc

        try:
            self.bproc = bproc = import_blenderproc(os.path.join(request["out_dir"], "blenderproc"))
        except RenderEnvMissing as error:
            raise WorkerFailure(str(error)) from None
        import bpy
        import mathutils
        from blenderproc.python.types.MeshObjectUtility import MeshObject, create_primitive

        self.bpy, self.mathutils, self.MeshObject, self.create_primitive = bpy, mathutils, MeshObject, create_primitive
        self.params = p = request["params"]
        self.assets = request["meshes"]  # [{"path", "label", "faces"}] of usable meshes
        self.classes = request["prepared"]["classes"]
        self.width, self.height = p["width"], p["height"]
        bproc.init()
        bproc.renderer.set_render_devices(use_only_cpu=not str(request.get("device", "cpu")).startswith("cuda"),
                                          desired_gpu_device_type=["OPTIX", "CUDA"])
        self.configure_quality(p)
        bproc.camera.set_resolution(self.width, self.height)
        # Passes: depth (z, no anti-aliasing), object index (instance ids), world normals.
        bproc.renderer.enable_depth_output(activate_antialiasing=False)
        bproc.renderer.enable_segmentation_output(map_by=["instance"])
        self._enable_world_normals()
        for node in bpy.context.scene.node_tree.nodes:  # float32 EXR: the arrays we store, not half floats
            if node.bl_idname == "CompositorNodeOutputFile":
                node.format.color_mode = "RGB"  # 3 channels: what BlenderProc's loader slices
                node.format.color_depth = "32"
                node.format.exr_codec = "NONE"  # temporary files read once: compressing them is wasted time
        self.meshes: dict[str, tuple] = {}
        self.primitives: dict[str, object] = {}  # distractor shape -> its bpy mesh, made once per worker
        ground = create_primitive("PLANE", scale=[30, 30, 1])
        ground.blender_obj.pass_index = OTHER_PASS_BASE
        self.ground = ground
        self.world_nodes = None  # the HDRI's texture and mapping nodes, made on first use
        self.ground_material = bproc.material.create("ground")
        ground.replace_materials(self.ground_material)
        self._fast_bsdf(self.ground_material)
        self.frame_blocks: list = []  # datablocks made for one frame, removed after it

    def configure_quality(self, p: dict) -> None:
        """`fast`: few samples with adaptive sampling, Cycles' own OIDN denoiser, short light paths,
        persistent data. `blenderproc`: BlenderProc 2.8's defaults (1024 samples unless `samples` says
        otherwise, noise threshold 0.01, its "INTEL" denoiser, 3 bounces but no glossy one), the
        benchmark's baseline. `reference`: what both are compared with (benchmarks/bench_render_psnr.py):
        no adaptive sampling, no denoiser, Blender's default light paths (12 bounces, 4 diffuse, 4 glossy,
        caustics) and light tree, BlenderProc's materials (multiscatter GGX) and colour management.

        The denoiser matters most: BlenderProc's "INTEL" denoiser is a compositor Denoise node, which
        here cost ~1-2 s per 256 px frame on its own (measured by muting it: the render op went from
        2.2 s to 0.23 s at 1 sample); Cycles' integrated OIDN denoises the same passes inside the
        render session, which persists between frames."""
        bpy, renderer = self.bpy, self.bproc.renderer
        cycles = bpy.context.scene.cycles
        samples = p["samples"] or {"fast": 4}.get(p["quality"], 1024)
        renderer.set_max_amount_of_samples(samples)
        if p["quality"] == "fast":
            renderer.set_noise_threshold(p["noise_threshold"])
            renderer.set_denoiser(None)  # removes BlenderProc's compositor Denoise node
            cycles.use_denoising = bpy.context.view_layer.cycles.use_denoising = bool(p["denoise"])
            cycles.denoiser = "OPENIMAGEDENOISE"
            cycles.denoising_input_passes = "RGB_ALBEDO_NORMAL"
            cycles.denoising_prefilter = "FAST"
            renderer.set_light_bounces(diffuse_bounces=p["bounces"], glossy_bounces=p["bounces"], ao_bounces_render=0,
                                       max_bounces=p["bounces"], transmission_bounces=0, transparent_max_bounces=2,
                                       volume_bounces=0)
            cycles.caustics_reflective = cycles.caustics_refractive = False
        elif p["quality"] == "reference":
            renderer.set_noise_threshold(0)  # every pixel gets every sample
            renderer.set_denoiser(None)
            cycles.use_denoising = bpy.context.view_layer.cycles.use_denoising = False
            for name in ("max_bounces", "diffuse_bounces", "glossy_bounces", "transmission_bounces",
                         "transparent_max_bounces", "volume_bounces", "caustics_reflective", "caustics_refractive",
                         "use_light_tree"):  # Blender's own defaults, which BlenderProc's init lowers
                setattr(cycles, name, cycles.bl_rna.properties[name].default)
        renderer.set_cpu_threads(p["threads"])
        bpy.context.scene.render.use_persistent_data = True

    def _fast_bsdf(self, material) -> None:
        """`fast`: single-scatter GGX instead of Blender 4's default multiscatter GGX, whose random walk
        cost 16 % of the render call's CPU time at 4 samples (benchmarks/RESULTS.md, profile_render.py)."""
        if self.params["quality"] == "fast":
            material.get_the_one_node_with_type("BsdfPrincipled").distribution = "GGX"

    def _enable_world_normals(self) -> None:
        """Cycles' Normal pass (world space) to a float EXR, loaded by BlenderProc's render() as `normals`.
        BlenderProc's own normals output keys the camera rotation of the frames that exist when it is
        enabled; our camera changes every frame, so we store world normals and the camera pose instead."""
        from blenderproc.python.utility.Utility import Utility

        bpy = self.bpy
        bpy.context.view_layer.use_pass_normal = True
        tree = bpy.context.scene.node_tree
        layers = Utility.get_the_one_node_with_type(tree.nodes, "CompositorNodeRLayers")
        output = tree.nodes.new("CompositorNodeOutputFile")
        folder = Utility.get_temporary_directory()
        output.base_path = folder
        output.format.file_format = "OPEN_EXR"
        output.file_slots.values()[0].path = "worldnormals_"
        # Through separate/combine: a vector socket written directly gives an X/Y/Z EXR that OpenCV reads
        # as one grey channel; as colour it is R/G/B (as BlenderProc's own normals output does).
        separate, combine = tree.nodes.new("CompositorNodeSepRGBA"), tree.nodes.new("CompositorNodeCombRGBA")
        tree.links.new(layers.outputs["Normal"], separate.inputs["Image"])
        for channel in "RGB":
            tree.links.new(separate.outputs[channel], combine.inputs[channel])
        tree.links.new(combine.outputs["Image"], output.inputs["Image"])
        Utility.add_output_entry({"key": "normals", "path": os.path.join(folder, "worldnormals_") + "%04d.exr",
                                  "version": "2.0.0"})

    # -- assets ---------------------------------------------------------------------------------
    def mesh(self, asset: dict):
        """(bpy mesh, unit-size vertices, faces) of an asset, loaded once per worker; centred on its
        bounding box and scaled to a largest extent of 1; decimated in Blender above decimate_faces."""
        if asset["path"] in self.meshes:
            return self.meshes[asset["path"]]
        import trimesh

        loaded = trimesh.load(asset["path"], force="mesh", process=True)
        vertices = np.asarray(loaded.vertices, dtype=np.float64)
        low, high = vertices.min(axis=0), vertices.max(axis=0)
        vertices = (vertices - (low + high) / 2) / max(float((high - low).max()), 1e-12)
        faces = np.asarray(loaded.faces, dtype=np.int64)
        data = self.bpy.data.meshes.new(os.path.basename(asset["path"]))
        data.from_pydata(vertices, [], faces)
        data.validate()
        data.update()
        limit = self.params["decimate_faces"]
        if len(faces) > limit:
            data = self._decimated(data, limit / len(faces))
        data.shade_smooth()
        data.materials.append(None)  # one slot, linked per object so instances can differ
        self.meshes[asset["path"]] = (data, vertices, faces)
        return self.meshes[asset["path"]]

    def _decimated(self, data, ratio: float):
        bpy = self.bpy
        holder = bpy.data.objects.new("decimate", data)
        bpy.context.scene.collection.objects.link(holder)
        modifier = holder.modifiers.new("decimate", "DECIMATE")
        modifier.ratio = ratio
        evaluated = holder.evaluated_get(bpy.context.evaluated_depsgraph_get())
        result = bpy.data.meshes.new_from_object(evaluated)
        bpy.data.objects.remove(holder, do_unlink=True)
        bpy.data.meshes.remove(data)
        return result

    # -- one frame ------------------------------------------------------------------------------
    def _material(self, name: str, rng, p: dict) -> tuple:
        material = self.bproc.material.create(name)
        color, roughness, metallic = _random_color(rng), _u(rng, p["roughness"]), _u(rng, p["metallic"])
        material.set_principled_shader_value("Base Color", [*color, 1.0])
        material.set_principled_shader_value("Roughness", roughness)
        material.set_principled_shader_value("Metallic", metallic)
        self._fast_bsdf(material)
        self.frame_blocks.append(material.blender_obj)
        return material, {"color": [round(c, 4) for c in color], "roughness": round(roughness, 4),
                          "metallic": round(metallic, 4)}

    def place_objects(self, rng) -> tuple[list[dict], list[dict]]:
        """Objects (classes balanced) and distractors resting on the ground, not overlapping in xy
        where the spread allows it."""
        bpy, p = self.bpy, self.params
        by_class: dict[str, list[dict]] = {}
        for asset in self.assets:
            by_class.setdefault(asset["label"], []).append(asset)
        count = int(rng.integers(p["objects"][0], p["objects"][1] + 1))
        placed, records, footprints = [], [], []
        for k in range(count):
            label = self.classes[int(rng.integers(len(self.classes)))]
            asset = by_class[label][int(rng.integers(len(by_class[label])))]
            data, unit_vertices, faces = self.mesh(asset)
            scale = _u(rng, p["scale"])
            rotation = _random_rotation(rng, p["rotation"])
            local = unit_vertices @ (rotation * scale).T
            radius = float(np.linalg.norm(local[:, :2], axis=1).max())
            xy = self._free_spot(rng, radius, footprints)
            footprints.append((xy, radius))
            # Resting on the ground; with physics, dropped from drop_height to settle into a stable pose.
            lift = _u(rng, p["drop_height"]) if p["physics"] else 0.0
            translation = np.array([xy[0], xy[1], -local[:, 2].min() + lift])
            matrix = np.eye(4)
            matrix[:3, :3], matrix[:3, 3] = rotation * scale, translation
            obj = bpy.data.objects.new(f"object-{k}", data)
            bpy.context.scene.collection.objects.link(obj)
            obj.matrix_world = self.mathutils.Matrix(matrix.tolist())  # rows
            obj.pass_index = OBJECT_PASS_BASE + k
            material, look = self._material(f"object-{k}", rng, p)
            obj.material_slots[0].link = "OBJECT"
            obj.material_slots[0].material = material.blender_obj
            self.frame_blocks.append(obj)
            placed.append({"object": obj, "vertices": local + translation, "faces": faces, "unit_vertices": unit_vertices,
                           "category": self.classes.index(label)})
            records.append({"mesh": asset["path"], "class": label, "faces": len(data.polygons),
                            "scale": round(scale, 5), "rotation": np.round(rotation, 6).tolist(),
                            "location": np.round(translation, 5).tolist(), **look})
        distractors, others = [], []
        for k in range(int(rng.integers(p["distractors"][0], p["distractors"][1] + 1))):
            shape = PRIMITIVES[int(rng.integers(len(PRIMITIVES)))]
            size = _u(rng, p["scale"]) * 0.5
            obj = bpy.data.objects.new(f"distractor-{k}", self._primitive(shape))
            bpy.context.scene.collection.objects.link(obj)
            self.frame_blocks.append(obj)
            xy = self._free_spot(rng, size, footprints)
            footprints.append((xy, size))
            obj.scale = (size / 2, size / 2, size / 2)  # primitives span [-1, 1]
            obj.location = (xy[0], xy[1], size / 2 + (_u(rng, p["drop_height"]) if p["physics"] else 0.0))
            turn = float(rng.uniform(0, 2 * math.pi))
            obj.rotation_euler = (0.0, 0.0, turn)
            obj.pass_index = OTHER_PASS_BASE + 1 + k
            material, look = self._material(f"distractor-{k}", rng, p)
            obj.material_slots[0].link = "OBJECT"
            obj.material_slots[0].material = material.blender_obj
            others.append(obj)
            distractors.append({"shape": shape, "size": round(size, 5), "location": [round(v, 5) for v in obj.location],
                                "turn": round(turn, 5), **look})
        if p["physics"]:
            self.settle(placed, others, records, distractors)
        return placed, [{"objects": records, "distractors": distractors}]

    def _primitive(self, shape: str):
        """The distractor shape's mesh (spanning [-1, 1]), made once: BlenderProc's create_primitive runs
        an operator and makes a new mesh per call; objects share this one and link their own material."""
        if shape not in self.primitives:
            made = self.create_primitive(shape)
            data = made.blender_obj.data
            self.bpy.data.objects.remove(made.blender_obj, do_unlink=True)
            data.materials.clear()
            data.materials.append(None)
            self.primitives[shape] = data
        return self.primitives[shape]

    def settle(self, placed: list[dict], others: list, records: list[dict], distractors: list[dict]) -> None:
        """Drop the objects and distractors onto the ground with BlenderProc's rigid-body simulation
        (Bullet, convex-hull shapes, the ground a passive box) and keep their final poses.

        BlenderProc's `simulate_physics_and_fix_final_poses` wraps the same bake loop
        (`_PhysicsSimulation.do_simulation`) in an undo step and re-centres and re-scales each object's
        mesh; here meshes are shared between objects (loaded once per worker) and Python holds references
        to the frame's datablocks, which an undo would invalidate. So the loop is called directly: objects
        are centred on their bounding box (the centre of mass is approximated by it) and uniformly
        scaled, which Bullet takes as it is."""
        from blenderproc.python.object.PhysicsSimulation import _PhysicsSimulation

        bpy, p = self.bpy, self.params
        scene = bpy.context.scene
        if self.ground.blender_obj.rigid_body is None:  # kept between frames: the world is only disabled
            self.MeshObject(self.ground.blender_obj).enable_rigidbody(False, collision_shape="BOX")
        bodies = [item["object"] for item in placed] + others
        for obj in bodies:
            self.MeshObject(obj).enable_rigidbody(True, collision_shape="CONVEX_HULL", friction=p["friction"])
        scene.frame_set(1)
        _PhysicsSimulation.do_simulation(p["settle_seconds"][0], p["settle_seconds"][1], 1.0, 0.005, 0.05)
        final = {obj.name: obj.matrix_world.copy() for obj in bodies}
        with bpy.context.temp_override(point_cache=scene.rigidbody_world.point_cache):
            bpy.ops.ptcache.free_bake()
        scene.rigidbody_world.enabled = False  # as BlenderProc does: the bodies no longer move
        scene.frame_set(0)
        for obj in bodies:
            obj.matrix_world = final[obj.name]
        bpy.context.view_layer.update()
        for item, record in zip(placed, records):
            matrix = np.array(item["object"].matrix_world)
            linear = matrix[:3, :3]
            item["vertices"] = item["unit_vertices"] @ linear.T + matrix[:3, 3]
            record["dropped_from"] = record["location"]
            record["rotation"] = np.round(linear / record["scale"], 6).tolist()
            record["location"] = np.round(matrix[:3, 3], 5).tolist()
        for obj, record in zip(others, distractors):
            record["location"] = [round(v, 5) for v in obj.matrix_world.translation]
            record["rotation"] = np.round(np.array(obj.matrix_world)[:3, :3] / record["size"] * 2, 6).tolist()

    def _free_spot(self, rng, radius: float, taken: list) -> tuple[float, float]:
        spread = self.params["spread"]
        best = None
        for _ in range(50):
            angle, distance = rng.uniform(0, 2 * math.pi), spread * math.sqrt(rng.uniform(0, 1))
            spot = (distance * math.cos(angle), distance * math.sin(angle))
            best = spot
            if all(math.dist(spot, other) >= radius + other_radius for other, other_radius in taken):
                return spot
        return best  # crowded: allow an overlap rather than fail

    def light_scene(self, rng) -> dict:
        """A sun, 1..N point lights on a shell, a background colour (or an HDRI), a ground colour."""
        bproc, p = self.bproc, self.params
        record: dict = {"lights": []}
        sun = bproc.types.Light(light_type="SUN", name="sun")
        elevation, azimuth = rng.uniform(0.3, 1.4), rng.uniform(0, 2 * math.pi)
        sun.set_rotation_euler([math.pi / 2 - elevation, 0, azimuth])
        sun.set_energy(_u(rng, p["sun_strength"]))
        self.frame_blocks += [sun.blender_obj, sun.blender_obj.data]
        record["lights"].append({"type": "SUN", "elevation": round(elevation, 4), "azimuth": round(azimuth, 4),
                                 "energy": round(sun.get_energy(), 3)})
        for k in range(int(rng.integers(p["lights"][0], p["lights"][1] + 1))):
            light = bproc.types.Light(light_type="POINT", name=f"light-{k}")
            location = self._shell_point(rng, (1.5, 4.0), (15, 85))
            light.set_location(location)
            energy = _u(rng, p["light_energy"])
            light.set_energy(energy)
            tint = colorsys.hsv_to_rgb(rng.uniform(0.05, 0.65), rng.uniform(0.0, 0.4), 1.0)
            light.set_color(list(tint))
            self.frame_blocks += [light.blender_obj, light.blender_obj.data]
            record["lights"].append({"type": "POINT", "location": np.round(location, 4).tolist(),
                                     "energy": round(energy, 2), "color": [round(c, 4) for c in tint]})
        hdris = self.params.get("hdris") or []
        if hdris and rng.uniform() < p["hdri_probability"]:
            path, strength = hdris[int(rng.integers(len(hdris)))], _u(rng, p["hdri_strength"])
            rotation = float(rng.uniform(0, 2 * math.pi))
            self.set_hdri(path, strength, rotation)
            record["background"] = {"hdri": path, "strength": round(strength, 4), "rotation": round(rotation, 5)}
        else:
            color, strength = _random_color(rng), _u(rng, p["background_strength"])
            bproc.renderer.set_world_background(color, strength=strength)
            record["background"] = {"color": [round(c, 4) for c in color], "strength": round(strength, 4)}
        ground_color = _random_color(rng)
        ground_roughness = _u(rng, p["roughness"])
        self.ground_material.set_principled_shader_value("Base Color", [*ground_color, 1.0])
        self.ground_material.set_principled_shader_value("Roughness", ground_roughness)
        record["ground"] = {"color": [round(c, 4) for c in ground_color], "roughness": round(ground_roughness, 4)}
        return record

    def set_hdri(self, path: str, strength: float, rotation: float) -> None:
        """World light and background from an environment image, turned `rotation` radians about z.
        BlenderProc's `set_world_background_hdr_img` adds three new nodes to the world on every call (a
        long loop grows the world shader frame after frame); these nodes are made once and re-pointed.
        Images are loaded once per worker (check_existing)."""
        bpy = self.bpy
        tree = bpy.context.scene.world.node_tree
        if self.world_nodes is None:
            texture, mapping = tree.nodes.new("ShaderNodeTexEnvironment"), tree.nodes.new("ShaderNodeMapping")
            coordinates = tree.nodes.new("ShaderNodeTexCoord")
            tree.links.new(coordinates.outputs["Generated"], mapping.inputs["Vector"])
            tree.links.new(mapping.outputs["Vector"], texture.inputs["Vector"])
            self.world_nodes = (texture, mapping)
            # Cycles builds the environment's importance map on every render whose world changed (each
            # frame here): at its automatic resolution that took ~2.3 s per frame; 256 x 128 suffices for
            # these soft studio environments.
            bpy.context.scene.world.cycles.sampling_method = "MANUAL"
            bpy.context.scene.world.cycles.sample_map_resolution = HDRI_MAP_RESOLUTION
        texture, mapping = self.world_nodes
        texture.image = bpy.data.images.load(path, check_existing=True)
        mapping.inputs["Rotation"].default_value = (0.0, 0.0, rotation)
        background = tree.nodes.get("Background")
        tree.links.new(texture.outputs["Color"], background.inputs["Color"])
        background.inputs["Strength"].default_value = strength

    @staticmethod
    def _shell_point(rng, radius, elevation_deg) -> np.ndarray:
        r = rng.uniform(*radius)
        elevation = math.radians(rng.uniform(*elevation_deg))
        azimuth = rng.uniform(0, 2 * math.pi)
        return np.array([r * math.cos(elevation) * math.cos(azimuth), r * math.cos(elevation) * math.sin(azimuth),
                         r * math.sin(elevation)])

    def sample_camera(self, rng, placed: list[dict]) -> tuple[np.ndarray, np.ndarray, dict]:
        """A camera on a shell around the objects, looking at their centre: (K, camera-to-world in
        OpenCV convention, record)."""
        p = self.params
        points = np.concatenate([item["vertices"] for item in placed])
        center = (points.min(axis=0) + points.max(axis=0)) / 2
        radius = max(float(np.linalg.norm(points - center, axis=1).max()), 1e-3)
        focal_mm = _u(rng, p["focal_mm"])
        fx = focal_mm / 36.0 * self.width  # a 36 mm wide sensor
        K = np.array([[fx, 0, self.width / 2], [0, fx, self.height / 2], [0, 0, 1]])
        half_fov = math.atan(min(self.width, self.height) / 2 / fx)
        distance = radius / math.sin(half_fov) * _u(rng, p["distance_factor"])
        elevation = math.radians(_u(rng, p["elevation_deg"]))
        azimuth = rng.uniform(0, 2 * math.pi)
        location = center + distance * np.array([math.cos(elevation) * math.cos(azimuth),
                                                 math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
        target = center + rng.normal(0, 0.15 * radius, 3)
        roll = math.radians(rng.uniform(-p["roll_deg"], p["roll_deg"]))
        rotation = np.asarray(self.bproc.camera.rotation_from_forward_vec(target - location, inplane_rot=roll))
        gl = np.eye(4)
        gl[:3, :3], gl[:3, 3] = rotation, location
        cv = gl @ np.diag([1.0, -1.0, -1.0, 1.0])  # Blender/OpenGL camera (-z forward) -> OpenCV (+z forward)
        record = {"focal_mm": round(focal_mm, 4), "distance": round(distance, 5), "elevation": round(elevation, 5),
                  "azimuth": round(azimuth, 5), "roll": round(roll, 5), "target": np.round(target, 5).tolist()}
        return K, cv, record

    def silhouettes(self, placed: list[dict], K: np.ndarray, cam_to_world: np.ndarray) -> list[np.ndarray]:
        """Each object's unoccluded in-image mask, rasterised from its triangles with OpenCV: the
        denominator of the visible fraction (BOP's visib_fract), without a second render."""
        import cv2

        world_to_cam = np.linalg.inv(cam_to_world)
        masks = []
        for item in placed:
            camera_points = item["vertices"] @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
            z = camera_points[:, 2]
            pixels = (camera_points[:, :2] / np.maximum(z, 1e-6)[:, None]) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
            triangles = item["faces"][(z[item["faces"]] > 1e-3).all(axis=1)]
            mask = np.zeros((self.height, self.width), np.uint8)
            if len(triangles):
                # fillPoly's integer coordinates are pixel centres; `shift` keeps 4 bits of sub-pixel precision.
                corners = np.round((pixels[triangles] - 0.5) * 16).astype(np.int32)
                corners = np.clip(corners, -(2 ** 20), 2 ** 20)
                cv2.fillPoly(mask, list(corners), 1, lineType=cv2.LINE_8, shift=4)
            masks.append(mask.astype(bool))
        return masks

    def render(self, K: np.ndarray, cam_to_world: np.ndarray, seed: int) -> dict:
        bproc, bpy = self.bproc, self.bpy
        bproc.utility.reset_keyframes()
        bproc.camera.set_intrinsics_from_K_matrix(K, self.width, self.height)
        bproc.camera.add_camera_pose(cam_to_world @ np.diag([1.0, -1.0, -1.0, 1.0]))
        bpy.context.scene.cycles.seed = seed % (2 ** 31)
        data = bproc.renderer.render(verbose=False)
        return {key: value[0] for key, value in data.items()}

    def clear_frame(self) -> None:
        """Remove the frame's objects first, then the data they used (meshes of distractors, materials,
        lights): nothing accumulates in the .blend data across frames."""
        bpy = self.bpy
        order = ((bpy.types.Object, bpy.data.objects), (bpy.types.Mesh, bpy.data.meshes),
                 (bpy.types.Material, bpy.data.materials), (bpy.types.Light, bpy.data.lights))
        for kind, collection in order:
            for block in self.frame_blocks:
                if isinstance(block, kind):
                    collection.remove(block)
        self.frame_blocks = []

    def frame(self, seed: int, sample: int, shard: str) -> dict:
        """One row: re-samples the camera (up to max_camera_tries) until an object is visible."""
        p = self.params
        rng = np.random.default_rng(seed)
        clock = time.perf_counter()
        placed, [scene] = self.place_objects(rng)
        scene.update(self.light_scene(rng))
        self.timings = {"scene": time.perf_counter() - clock, "render": 0.0}
        tries = 0
        try:
            for tries in range(1, p["max_camera_tries"] + 1):
                K, cam_to_world, camera = self.sample_camera(rng, placed)
                masks = self.silhouettes(placed, K, cam_to_world)
                if not any(mask.sum() >= p["min_visible_pixels"] for mask in masks):
                    continue  # nothing in view: no render needed to know it
                clock = time.perf_counter()
                # render_seed shifts Cycles' seed far from any other try's (seed + tries) of this frame
                output = self.render(K, cam_to_world, seed + tries + 1_000_003 * p["render_seed"])
                self.timings["render"] += time.perf_counter() - clock
                row = self.label(output, placed, masks, K)
                if row is not None:
                    break
            else:
                raise WorkerFailure(
                    f"sample {sample} of shard {shard} (seed {seed}): the camera saw no object (>= "
                    f"{p['min_visible_pixels']} visible pixels) after {p['max_camera_tries']} tries; "
                    "raise distance_factor/focal_mm ranges or max_camera_tries")
        finally:
            self.clear_frame()
        scene["camera"] = camera
        scene["camera_tries"] = tries
        scene["labelled"] = row.pop("labelled")  # objects[i] is params.objects[labelled[i]]
        row.update({"camera_K": K.astype(np.float64), "camera_to_world": cam_to_world.astype(np.float64),
                    "seed": seed, "params": json.dumps(scene, sort_keys=True)})
        return row

    def label(self, output: dict, placed: list[dict], masks: list[np.ndarray], K) -> dict | None:
        p = self.params
        raw = np.asarray(output["instance_segmaps"]).astype(np.int64)
        instance = np.zeros(raw.shape, np.uint16)
        semantic = np.zeros(raw.shape, np.uint16)
        objects, fractions, labelled = [], [], []
        for k, item in enumerate(placed):
            visible = raw == OBJECT_PASS_BASE + k
            count = int(visible.sum())
            if count < p["min_visible_pixels"]:
                continue
            labelled.append(k)
            ys, xs = np.nonzero(visible)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1  # pixel-inclusive: never zero-area
            objects.append({"bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                            "category": item["category"], "score": None})
            full = int((masks[k] | visible).sum())
            fractions.append(count / full)
            instance[visible] = len(objects)
            semantic[visible] = item["category"] + 1
        if not objects:
            return None
        background = raw == 0
        depth = np.asarray(output["depth"], dtype=np.float32).copy()
        depth[background | ~np.isfinite(depth)] = 0.0  # no surface: 0, the depth-sensor convention
        normals = np.asarray(output["normals"], dtype=np.float32)[:, :, :3].copy()
        normals[background] = 0.0
        np.clip(normals, -1.0, 1.0, out=normals)
        image = np.asarray(output["colors"], dtype=np.uint8)[:, :, :3]
        return {"image": np.ascontiguousarray(image), "depth": depth, "normals": normals,
                "segmentation": instance, "class_segmentation": semantic, "objects": objects,
                "visible_fraction": np.asarray(fractions, dtype=np.float32), "labelled": labelled}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def produce(request: dict, writer) -> None:
    """Render the shard. With $SYNTHLOOM_RENDER_STATS set, append one JSON line per frame (seconds,
    resident memory) to that file: what benchmarks/bench_render.py measures; rows never carry timings."""
    stats = os.environ.get("SYNTHLOOM_RENDER_STATS")
    started = time.perf_counter()
    renderer = Renderer(request)
    shard = request["shard"]
    name = f"{shard['split']}-{shard['index']:05d}"
    log = open(stats, "a") if stats else None
    if log:
        log.write(json.dumps({"event": "ready", "seconds": time.perf_counter() - started, "rss": _rss_bytes()}) + "\n")
    for offset, seed in enumerate(request["seeds"]):
        clock, cpu = time.perf_counter(), time.process_time()
        row = renderer.frame(seed, offset, name)
        written = time.perf_counter()
        writer.add(row)
        if log:
            phases = {**renderer.timings, "write": time.perf_counter() - written}
            log.write(json.dumps({"event": "frame", "frame": offset, "seconds": time.perf_counter() - clock,
                                  "cpu_seconds": time.process_time() - cpu, "rss": _rss_bytes(),
                                  "phases": phases}) + "\n")
            log.flush()


if __name__ == "__main__":
    synthloom_worker.main(produce, packages=("bpy", "blenderproc", "opencv-contrib-python-headless", "trimesh"))

"""BlenderProc 2.8 imported in-process from the pip `bpy` wheel, without `blenderproc run` and without
downloading Blender. Runs in the render environment (`.venv-render`), never in synthloom's.

Three small shims, none of which edits site-packages:
1. `OUTSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT_BUT_IN_RUN_SCRIPT=1` before `import blenderproc`:
   otherwise its `__init__` refuses to run outside `blenderproc run`. With it, `blenderproc` imports but
   loads none of its API modules, so we import `blenderproc.api.*` ourselves.
2. `SetupUtility.setup` is replaced by a no-op: it pip-installs BlenderProc's dependencies into the
   Python of a downloaded Blender, which the pip `bpy` does not have; `make render-env` installed them.
   The one thing of it we need, the temporary folder for render outputs, is set explicitly (left
   unset, BlenderProc writes its EXRs into the working directory).
3. `bproc.init()` sets the UI language to `en_US` and fails: the pip `bpy` ships no translations
   (only `DEFAULT` exists). `init` below is BlenderProc 2.8.0's `Initializer.init` without that line
   (the language only affects UI labels, never rendering).

The API modules are imported on first use (`_LazyModule`): importing all fifteen, as `blenderproc run`
does, pulls scikit-learn, matplotlib and scipy.stats through loaders and writers the renderer never
calls, about 3 s of a worker's ~4 s start-up on this machine; one worker starts per shard.
"""

from __future__ import annotations

import importlib
import os
import sys

API_MODULES = ("loader", "utility", "sampler", "math", "postprocessing", "writer", "material", "lighting", "camera",
               "renderer", "world", "constructor", "types", "object", "filter")
INSTALL_HINT = ("create the render environment: `make render-env` (python3.11 -m venv .venv-render && "
                ".venv-render/bin/pip install -r requirements/render-lock.txt)")


class RenderEnvMissing(ImportError):
    pass


def import_blenderproc(temp_dir: str):
    """`blenderproc` with its API modules as attributes and a working `init`, like `import blenderproc
    as bproc` inside `blenderproc run`; render outputs go through `temp_dir`."""
    os.environ["OUTSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT_BUT_IN_RUN_SCRIPT"] = "1"
    try:
        import bpy  # noqa: F401  (the pip build of Blender: 4.2.x)
        import blenderproc as bproc
    except ImportError as error:
        raise RenderEnvMissing(f"{error.name or error} is not installed for {sys.executable}; {INSTALL_HINT}") from None
    from blenderproc.python.utility.SetupUtility import SetupUtility

    SetupUtility.setup = staticmethod(lambda *args, **kwargs: sys.argv)
    SetupUtility.setup_utility_paths(temp_dir)
    for name in API_MODULES:
        setattr(bproc, name, _LazyModule(f"blenderproc.api.{name}"))
    from blenderproc.python.utility.Initializer import clean_up

    bproc.init = init
    bproc.clean_up = clean_up
    return bproc


class _LazyModule:
    """`blenderproc.api.<name>`, imported when one of its attributes is first read."""

    def __init__(self, name: str):
        self._name, self._module = name, None

    def __getattr__(self, attribute: str):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)


def init(clean_up_scene: bool = True) -> None:
    """BlenderProc 2.8.0's `Initializer.init`, minus setting the UI language (see the module docstring)."""
    import bpy
    from blenderproc.python.renderer import RendererUtility
    from blenderproc.python.utility.GlobalStorage import GlobalStorage
    from blenderproc.python.utility.Initializer import _Initializer, clean_up

    if GlobalStorage.is_in_storage("bproc_init_complete") and GlobalStorage.get("bproc_init_complete"):
        raise RuntimeError("BlenderProc has already been initialized")
    if clean_up_scene:
        clean_up(clean_up_camera=True)
    bpy.context.scene.render.engine = "CYCLES"
    RendererUtility.set_render_devices()
    _Initializer.set_default_parameters()
    GlobalStorage.add("bproc_init_complete", True)

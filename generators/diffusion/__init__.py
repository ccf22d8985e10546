"""Generator `diffusion`: text-to-image with a diffusers pipeline, optionally LoRA/DreamBooth fine-tuned.

- `generator.py`: `DiffusionGenerator` and its params (the entry point
  `synthloom.generators.diffusion:DiffusionGenerator`).
- `pipeline.py`: resolving and loading a pipeline offline, schedulers, dtypes, speed-ups.
- `prompts.py`: class-balanced prompts from templates and attributes.
- `adapters.py`: LoRA / DreamBooth params and their cached training (`AdapterTrainer`).
- `lora_training.py`: the adapter training loop and adapter files.

Training-only code that no generator runs (the Fashion-MNIST base-model trainer, pipelines built from
configs for tests and benchmarks) lives in `scripts/`, outside the installed package.
"""

from .generator import DiffusionGenerator, DiffusionParams

__all__ = ["DiffusionGenerator", "DiffusionParams"]

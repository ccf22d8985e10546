"""Prompts at scale: templates x classes x attribute lists, sampled per image, class-balanced.

A dataset prompted with one sentence per class inherits the text-to-image model's habits (the same
background, colour and pose every time). So each image's prompt is drawn from templates whose
placeholders name attribute lists (background, lighting, viewpoint, size, colour, or the user's own):

    templates: ["a photo of a {size} {colour} {class}, {viewpoint}, {lighting}, {background}"]

The class cycles with the sample's index within its split (exactly balanced, up to the remainder);
template and attribute values are drawn from the sample's own seed, so a prompt depends only on
(root seed, split, index), not on shard size or order. The chosen values are returned with the prompt
so each row records them.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Formatter

import numpy as np

from synthloom.errors import GeneratorError

CLASS_SLOT = "class"

DEFAULT_ATTRIBUTES: dict[str, list[str]] = {
    "background": ["on a plain white background", "on a wooden table", "in a forest", "on a city street",
                   "on a beach", "on green grass", "in a studio", "in the snow"],
    "lighting": ["soft natural light", "bright studio lighting", "at sunset", "at night", "under dim light",
                 "in hard sunlight"],
    "viewpoint": ["front view", "side view", "top view", "from a low angle", "from above", "close up"],
    "size": ["small", "large", "tiny", "huge"],
    "colour": ["red", "green", "blue", "yellow", "black", "white", "brown", "grey"],
}
DEFAULT_TEMPLATES = ["a photo of a {size} {colour} {class}, {viewpoint}, {lighting}, {background}"]


@dataclass(frozen=True)
class PromptChoice:
    label: int
    class_name: str
    prompt: str
    attributes: dict[str, str]


def template_slots(template: str) -> list[str]:
    return [field for _, field, _, _ in Formatter().parse(template) if field is not None]


class PromptSampler:
    """Checks the prompt lists once, then gives each sample index its class and prompt."""

    def __init__(self, classes: list[str] | dict[str, str], templates: list[str], attributes: dict[str, list[str]]):
        # classes: names, or name -> the phrase put in the prompt ("t-shirt" -> "t-shirt or top").
        phrases = dict(classes) if isinstance(classes, dict) else {name: name for name in classes}
        if not phrases:
            raise GeneratorError("diffusion: the prompt list is empty (classes: []); name at least one class")
        if not templates:
            raise GeneratorError("diffusion: the prompt list is empty (templates: []); give at least one template")
        for name, values in attributes.items():
            if not values:
                raise GeneratorError(f"diffusion: attribute list '{name}' is empty")
        for template in templates:
            try:
                slots = template_slots(template)
            except ValueError as error:
                raise GeneratorError(f"diffusion: template {template!r} is malformed ({error})") from None
            unknown = [s for s in slots if s != CLASS_SLOT and s not in attributes]
            if unknown:
                raise GeneratorError(f"diffusion: template {template!r} names unknown attribute(s) {unknown}; "
                                     f"attributes: {sorted(attributes)}")
            if CLASS_SLOT not in slots:
                raise GeneratorError(f"diffusion: template {template!r} has no {{class}} slot")
        self.names = list(phrases)
        self.phrases = phrases
        self.templates = list(templates)
        self.attributes = {k: list(v) for k, v in attributes.items()}

    def choose(self, index: int, seed: int) -> PromptChoice:
        label = index % len(self.names)
        rng = np.random.default_rng(seed)
        template = self.templates[int(rng.integers(len(self.templates)))]
        slots = template_slots(template)
        # Draw every attribute (used or not) so a value depends on the seed alone, not on the template.
        drawn = {name: values[int(rng.integers(len(values)))] for name, values in sorted(self.attributes.items())}
        used = {name: drawn[name] for name in slots if name != CLASS_SLOT}
        prompt = " ".join(template.format(**{CLASS_SLOT: self.phrases[self.names[label]]}, **drawn).split())
        return PromptChoice(label, self.names[label], prompt, used)

"""Stable-Diffusion-style pipelines built from configs, with random weights and an offline tokenizer.

No pretrained weights exist on this machine, so tests, benchmarks and the small base model start from
configs: `tiny_pipeline()` (a few thousand parameters, for tests) and `sd15_pipeline()` (the Stable
Diffusion 1.5 architecture: UNet 320/640/1280/1280, 4-block VAE, 12-layer CLIP text encoder, for speed
measurements). Both are ordinary `StableDiffusionPipeline`s: `save_pretrained` writes a diffusers
pipeline directory that `from_pretrained` loads back, the same path users' models take.

The tokenizer is a real CLIP BPE tokenizer (`CLIPTokenizer`) whose vocab.json/merges.txt we write here:
every byte (CLIP's byte-to-unicode alphabet, bare and word-final), plus merges that make whole-word
tokens of the words prompts use. No tokenizer files can be downloaded here; this gives the same
tokenization code path as SD's tokenizer with a vocabulary small enough for tiny embeddings.

Why it lives in `scripts/` and not in the installed package: no generator uses it at run time (a build
loads a user's pipeline folder). It builds models for tests (tiny pipelines, a tiny CLIP), benchmarks
(`sd15_pipeline`) and the base-model trainer beside it (`fashion_base_model.py`: the tokenizer), all
development tools; one folder for them keeps the trainer, which `make base-model` runs, free of any
import from `tests/`. Tests import it with `scripts/` on their path (pyproject's pytest `pythonpath`).
"""

from __future__ import annotations

import json
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words that get whole-word tokens (anything else is spelled with byte tokens, as CLIP does for rare words).
PROMPT_WORDS = (
    "a an the of on in with at and photo picture image close up far away small large tiny huge "
    "red green blue yellow black white grey gray brown orange pink purple "
    "studio outdoor indoor street forest beach plain background table wooden grass snow "
    "soft hard bright dim natural light lighting sunlight sunset night "
    "front side top view angle low high from above below "
    "dog cat car bird shirt trouser trousers pullover dress coat sandal sneaker bag ankle boot t "
    "sks person object toy cup chair square circle"
).split()


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte -> printable unicode map."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def write_clip_tokenizer_files(folder: str | Path, words: tuple[str, ...] = PROMPT_WORDS) -> tuple[Path, Path]:
    """vocab.json + merges.txt of a small CLIP BPE vocabulary; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in alphabet + [c + "</w>" for c in alphabet]:
        vocab.setdefault(token, len(vocab))
    merges: list[str] = []
    for word in dict.fromkeys(words):
        # Merge left to right: "dog" -> "d o" -> "do g</w>": every intermediate is a token.
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            rule = f"{pieces[0]} {pieces[1]}"
            if rule not in merges:
                merges.append(rule)
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    for special in (BOS, EOS):
        vocab.setdefault(special, len(vocab))
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False))
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab_path, merges_path


def clip_tokenizer(folder: str | Path, max_length: int = 77):
    from transformers import CLIPTokenizer

    vocab, merges = write_clip_tokenizer_files(folder)
    return CLIPTokenizer(vocab=str(vocab), merges=str(merges), model_max_length=max_length)


def _pipeline(unet_config: dict, vae_config: dict, text_config: dict, work: Path, seed: int, max_length: int):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer(work / "tokenizer-files", max_length)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config)
    vae = AutoencoderKL(**vae_config)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=max(len(tokenizer), text_config.pop("vocab_size", 0)), bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
        eos_token_id=eos, pad_token_id=eos, max_position_embeddings=max_length, **text_config))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def tiny_pipeline(work: str | Path, size: int = 32, seed: int = 0, channels: tuple[int, int] = (8, 16),
                  cross_attention_dim: int = 32):
    """A random StableDiffusionPipeline small enough for tests (~0.2 M parameters; images of `size` px)."""
    work = Path(work)
    unet = dict(block_out_channels=channels, layers_per_block=1, sample_size=size // 2, in_channels=4, out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=cross_attention_dim, norm_num_groups=4, attention_head_dim=4)
    vae = dict(block_out_channels=(8, 16), in_channels=3, out_channels=3, layers_per_block=1, latent_channels=4,
               down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
               norm_num_groups=4, sample_size=size)
    text = dict(hidden_size=cross_attention_dim, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                projection_dim=cross_attention_dim)
    return _pipeline(unet, vae, text, work, seed, max_length=77)


def sd15_pipeline(work: str | Path, seed: int = 0):
    """Stable Diffusion 1.5's architecture (runwayml/stable-diffusion-v1-5 configs) with random weights."""
    work = Path(work)
    unet = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, norm_num_groups=32)
    vae = dict(sample_size=512, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
               block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)
    text = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                projection_dim=768, hidden_act="quick_gelu")
    return _pipeline(unet, vae, text, work, seed, max_length=77)


def save_tiny_pipeline(folder: str | Path, **options) -> Path:
    """Build `tiny_pipeline` and save it as a diffusers pipeline directory."""
    folder = Path(folder)
    tiny_pipeline(folder.parent / (folder.name + ".work"), **options).save_pretrained(folder)
    return folder


def save_tiny_clip(folder: str | Path, image_size: int = 32, seed: int = 0) -> Path:
    """A random CLIPModel + CLIPProcessor (our tokenizer, a PIL image processor) saved for CLIP-score tests."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor  # transformers 5 without torchvision
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor

    folder = Path(folder)
    tokenizer = clip_tokenizer(folder.parent / (folder.name + ".tokenizer"))
    eos = tokenizer.convert_tokens_to_ids(EOS)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                         num_hidden_layers=2, max_position_embeddings=77, bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
                         eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16)
    model = CLIPModel(config)
    processor = CLIPProcessor(image_processor=ImageProcessor(size={"shortest_edge": image_size},
                                                             crop_size={"height": image_size, "width": image_size}),
                              tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder

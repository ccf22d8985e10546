"""Tiny random OWLv2 and BLIP models, built from transformers configs and saved with `save_pretrained`
(model, tokenizer, image processor), for the labelers' tests and benchmark. No hub access: the
tokenizers are built here from vocabularies written in code.

- OWLv2: a CLIP byte-level BPE tokenizer whose vocabulary is the 256 byte characters (alone and
  word-final) plus CLIP's two specials, with no merges (character-level, enough for prompts).
- BLIP: a WordPiece BERT tokenizer over a few words and characters, with BLIP's "[DEC]" as bos; the
  text config's bos/eos/sep/pad ids point into that small vocabulary (the defaults point past it).
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
WORDS = ("a an the of photo picture photograph red green blue square squares small large on dark background "
         "image with one two three").split()
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789")


def clip_tokenizer():
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])


def bert_tokenizer():
    from transformers import BertTokenizer

    tokens = SPECIALS + WORDS + CHARS + ["##" + c for c in CHARS]
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, bos_token="[DEC]")


def tiny_owlv2(folder: Path, image_size: int = 64, patch_size: int = 16, hidden: int = 32, layers: int = 2,
               seed: int = 0) -> Path:
    """An Owlv2ForObjectDetection with (image_size / patch_size)^2 box predictions per image, boxes near
    the patch grid."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2Processor
    from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil

    tokenizer = clip_tokenizer()
    vocab = tokenizer.get_vocab()
    start, end = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    config = Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=16,
                         bos_token_id=start, eos_token_id=end, pad_token_id=end),
        vision_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                           num_attention_heads=4, image_size=image_size, patch_size=patch_size),
        projection_dim=hidden)
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    # Random box heads saturate their sigmoid (zero-size boxes); shrink the last layer so that boxes stay
    # near OWLv2's prior, one box of a patch's size around each patch centre, varied a little.
    with torch.no_grad():
        model.box_head.dense2.weight.mul_(0.01)
        model.box_head.dense2.bias.zero_()
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size={"height": image_size, "width": image_size}),
                               tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)


def tiny_blip(folder: Path, image_size: int = 32, patch_size: int = 8, hidden: int = 32, layers: int = 2,
              seed: int = 0, init_range: float = 0.2, vqa: bool = False) -> Path:
    """A BlipForConditionalGeneration (BlipForQuestionAnswering with `vqa`); a wide `init_range` so that
    random captions depend on the image."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipForQuestionAnswering, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    tokenizer = bert_tokenizer()
    vocab = tokenizer.get_vocab()
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=hidden, encoder_hidden_size=hidden,
                         intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
                         max_position_embeddings=64, bos_token_id=vocab["[DEC]"], eos_token_id=vocab["[SEP]"],
                         sep_token_id=vocab["[SEP]"], pad_token_id=vocab["[PAD]"], initializer_range=init_range),
        vision_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                           num_attention_heads=4, image_size=image_size, patch_size=patch_size,
                           initializer_range=init_range),
        projection_dim=hidden, initializer_range=init_range)
    torch.manual_seed(seed)
    model = (BlipForQuestionAnswering if vqa else BlipForConditionalGeneration)(config).eval()
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": image_size, "width": image_size}),
                              tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)

"""Building a Florence-2 from nothing, offline: a byte-level BPE tokenizer trained on a corpus
with Florence-2's special tokens and the 1000 location tokens, the image processor, and a model
of a given size (random weights). Tests and ``fld bootstrap`` use it; users with a released
checkpoint folder never need it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

BASE_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>"]
LOC_TOKENS = [f"<loc_{i}>" for i in range(1000)]
FLORENCE2_TOKENS = [
    "<od>", "</od>", "<ocr>", "</ocr>", "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>",
    "<grounding>", "</grounding>", "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>",
    "<region_to_desciption>", "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>", "</poly>", "<and>",
]  # fmt: skip
"""The extra tokens of the released Florence-2 tokenizer (its spelling of 'desciption' included)."""

BANNED_GROUNDING = [
    "it", "I", "me", "mine", "you", "your", "yours", "he", "him", "his", "she", "her", "hers", "they",
    "them", "their", "theirs", "one", "oneself", "we", "us", "our", "ours", "you", "your", "yours",
    "they", "them", "their", "theirs", "mine", "yours", "his", "hers", "its", "ours", "yours", "theirs",
    "myself", "yourself", "himself", "herself", "itself", "ourselves", "yourselves", "themselves",
    "this", "that", "these", "those", "who", "whom", "whose", "which", "what", "who", "whom", "whose",
    "which", "that", "all", "another", "any", "anybody", "anyone", "anything", "each", "everybody",
    "everyone", "everything", "few", "many", "nobody", "none", "one", "several", "some", "somebody",
    "someone", "something", "each other", "one another", "myself", "yourself", "himself", "herself",
    "itself", "ourselves", "yourselves", "themselves", "the image", "image", "images", "the", "a", "an",
    "a group", "other objects", "lots", "a set",
]  # fmt: skip

POST_PROCESSOR_CONFIG = {
    "ocr": {"PATTERN": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
            "AREA_THRESHOLD": 0.0},
    "phrase_grounding": {"banned_grounding_tokens": BANNED_GROUNDING},
    "pure_text": {}, "description_with_bboxes": {}, "description_with_polygons": {}, "polygons": {},
    "bboxes": {}, "description_with_bboxes_or_polygons": {},
}


@dataclass(frozen=True)
class Florence2Size:
    depths: tuple[int, ...]
    embed_dim: tuple[int, ...]
    heads: tuple[int, ...]
    window_size: int
    d_model: int
    layers: int
    text_heads: int
    ffn: int
    image_size: int = 768
    extra: dict = field(default_factory=dict)

    @property
    def stride(self) -> int:
        """Pixels per visual token: DaViT's first stage strides 4, every later one 2."""
        return 4 * 2 ** (len(self.depths) - 1)


SIZES = {
    "base": Florence2Size((1, 1, 9, 1), (128, 256, 512, 1024), (4, 8, 16, 32), 12, 768, 6, 12, 3072),
    "large": Florence2Size((1, 1, 9, 1), (256, 512, 1024, 2048), (8, 16, 32, 64), 12, 1024, 12, 16, 4096),
    "tiny": Florence2Size((1, 1, 1, 1), (32, 64, 96, 128), (1, 2, 3, 4), 7, 128, 2, 4, 256, image_size=224),
    "cpu": Florence2Size((1, 1, 1), (32, 64, 128), (1, 2, 4), 7, 128, 2, 4, 256, image_size=112),
    "small": Florence2Size((1, 1, 2), (48, 96, 192), (2, 4, 8), 7, 192, 3, 4, 768, image_size=224),
}
"""Florence-2-base and -large as released (DaViT + BART); ``tiny`` (2.1M parameters, 224 px, 7x7
visual tokens) and ``cpu`` (1.8M, three DaViT stages at 112 px: the same 7x7 tokens for a third of
the vision compute; docs/FLORENCE2_RECIPE.md), small sizes that train on a CPU; ``small`` (6.1M,
224 px, 14x14 visual tokens: four times the grid the ``cpu`` size plateaued on), the zoo's, trained
on a GPU and served on a CPU."""


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 4000):
    """A byte-level BPE tokenizer with Florence-2's specials, task tokens and location tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=BASE_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(corpus, trainer)
    core.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B </s>",
                                      special_tokens=[("<s>", 0), ("</s>", 2)]),
    ])  # like BART's: training targets end with </s>, so the model learns to stop
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>", extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": FLORENCE2_TOKENS + LOC_TOKENS})
    return tokenizer


def build_processor(tokenizer, image_size: int = 224, stride: int = 32):
    from transformers import CLIPImageProcessor, Florence2Processor

    images = CLIPImageProcessor(size={"height": image_size, "width": image_size}, do_center_crop=False,
                                crop_size={"height": image_size, "width": image_size},
                                image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    images.image_seq_length = (image_size // stride) ** 2 + 1
    return Florence2Processor(image_processor=images, tokenizer=tokenizer, post_processor_config=POST_PROCESSOR_CONFIG)


def build_model(size: str | Florence2Size, tokenizer, vocab_size: int | None = None):
    """A Florence-2 of ``size`` with random weights, its vocabulary that of ``tokenizer`` (or
    ``vocab_size`` embeddings, e.g. the released 51,289, to measure the real compute)."""
    from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration, Florence2VisionConfig

    s = SIZES[size] if isinstance(size, str) else size
    stages = len(s.depths)
    vision = Florence2VisionConfig(depths=list(s.depths), embed_dim=list(s.embed_dim), num_heads=list(s.heads),
                                   num_groups=list(s.heads), window_size=s.window_size, projection_dim=s.d_model,
                                   patch_size=[7, 3, 3, 3][:stages], patch_stride=[4, 2, 2, 2][:stages],
                                   patch_padding=[3, 1, 1, 1][:stages], patch_prenorm=[False, True, True, True][:stages],
                                   max_position_embeddings=max(50, s.image_size // s.stride))
    text = BartConfig(vocab_size=max(vocab_size or 0, len(tokenizer)), d_model=s.d_model, encoder_layers=s.layers, decoder_layers=s.layers,
                      encoder_attention_heads=s.text_heads, decoder_attention_heads=s.text_heads,
                      encoder_ffn_dim=s.ffn, decoder_ffn_dim=s.ffn, max_position_embeddings=1024,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
                      forced_bos_token_id=tokenizer.bos_token_id, forced_eos_token_id=tokenizer.eos_token_id)
    config = Florence2Config(vision_config=vision.to_dict(), text_config=text.to_dict(),
                             image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    return Florence2ForConditionalGeneration(config)


def save_checkpoint(model, processor, folder: str | Path) -> Path:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder

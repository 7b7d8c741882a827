"""Tiny random-init members of every supported VLM family, built offline in well under a second.

Each one has the family's real architecture class, processor class, special tokens and chat-template
style, with a byte-level BPE trained in-process (models/tiny.py's corpus) and hidden sizes of 32-64, so the
tests of labels, training, saving and generation run on the same code paths as the real checkpoints.

Three processors (Qwen2-VL's, Qwen2.5-VL's and SmolVLM's) insist on a video processor, and every video
processor in transformers 5.23 needs torchvision, which cannot be installed beside the CPU torch wheel. The
`*ImageOnly` subclasses below drop the video half; the image path is the parent's code, unchanged. They save
as the parent class, with a video processor config, so the folder is a standard one: plain `AutoProcessor`
loads it wherever torchvision is installed (without it, transformers cannot build these processors for any
folder, the official checkpoints included; vlmtune's loader then falls back to these classes).
"""

from __future__ import annotations

import torch
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    GemmaConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    MllamaConfig,
    MllamaForConditionalGeneration,
    MllamaImageProcessorPil,
    MllamaProcessor,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessorPil,
    SmolVLMProcessor,
)
from transformers.processing_utils import ProcessorMixin

from vlmtune.models.tiny import build_tiny, train_bpe

TINY_FAMILIES = ("llava", "qwen2-vl", "qwen2.5-vl", "mllama", "idefics3", "smolvlm", "paligemma", "gemma3")
HIDDEN = 64
_HALF = [0.5, 0.5, 0.5]


# ---------------------------------------------------------------- chat templates
# The families' real template styles, trimmed to text and images. `parts` renders a message's content.
_PARTS = (
    "{% if message['content'] is string %}{% set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set parts = message['content'] %}{% endif %}"
)

QWEN2_VL = (
    "{% for message in messages %}" + _PARTS +
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% for p in parts %}{% if p['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

LLAMA3_VISION = (
    "{% if messages %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}" + _PARTS +
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% for p in parts %}{% if p['type'] == 'image' %}<|image|>{% elif p['type'] == 'text' %}{{ p['text'] | trim }}{% endif %}{% endfor %}"
    "<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

# Idefics3's own template; SmolVLM's is the same after "<|im_start|>" instead of the bos token.
_IDEFICS3_BODY = (
    "{% for message in messages %}" + _PARTS +
    "{{ message['role'] | capitalize }}{% if parts[0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for p in parts %}{% if p['type'] == 'text' %}{{ p['text'] }}{% elif p['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IDEFICS3 = "{% if messages %}<|begin_of_text|>{% endif %}" + _IDEFICS3_BODY
SMOLVLM = "{% if messages %}<|im_start|>{% endif %}" + _IDEFICS3_BODY

GEMMA3 = (
    "{% if messages %}{{ bos_token }}{% endif %}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = (messages[0]['content'] if messages[0]['content'] is string else messages[0]['content'][0]['text']) + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}" + _PARTS +
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if loop.first %}{{ first_user_prefix }}{% endif %}"
    "{% for p in parts %}{% if p['type'] == 'image' %}<start_of_image>{% elif p['type'] == 'text' %}{{ p['text'] | trim }}{% endif %}{% endfor %}"
    "<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

# PaliGemma ships no chat template: it is a prefix -> suffix model ("<image>...<bos>prefix\n" then
# "suffix<eos>"). This template writes that format; on a turn with images the processor itself inserts the
# <bos> after the last image and the "\n" after the prefix, so the template writes them only on text turns.
PALIGEMMA = (
    "{% set ns = namespace(system='', first=true) %}"
    "{% for message in messages %}" + _PARTS +
    "{% if message['role'] == 'system' %}{% set ns.system = parts[0]['text'] + ' ' %}"
    "{% elif message['role'] == 'user' %}"
    "{% set images = parts | selectattr('type', 'equalto', 'image') | list %}"
    "{% for p in images %}<image>{% endfor %}"
    "{% if not images and ns.first %}{{ bos_token }}{% endif %}"
    "{% if ns.first %}{{ ns.system }}{% endif %}{% set ns.first = false %}"
    "{% for p in parts %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}"
    "{% if not images %}{{ '\\n' }}{% endif %}"
    "{% else %}{% for p in parts %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)


# ---------------------------------------------------------------- processors without video


class _SavesAsParent:
    """Write the parent's class name and a video processor, so a saved folder loads as the standard processor."""

    saved_as = ""
    video_class = ""
    # The video processor config of the folder this processor was loaded from, kept as it was; None: derive one.
    video_settings: dict | None = None

    def to_dict(self):
        return super().to_dict() | {"processor_class": self.saved_as, "video_processor": self.video_config()}

    def video_config(self) -> dict:
        """The video processor config to save: the source folder's own, else the image processor's settings
        under the family's video class (what transformers itself does for folders that predate video)."""
        if self.video_settings:
            return dict(self.video_settings)
        settings = {k: v for k, v in self.image_processor.to_dict().items() if k not in ("image_processor_type", "processor_class")}
        return settings | {"video_processor_type": self.video_class}


class Qwen2VLProcessorImageOnly(_SavesAsParent, Qwen2VLProcessor):
    """Qwen2-VL's processor for images only: its video processor needs torchvision."""

    saved_as, video_class = "Qwen2VLProcessor", "Qwen2VLVideoProcessor"

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # The parent passes (image, tokenizer, video); the attribute list from this signature has two.
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template)


class Qwen2_5_VLProcessorImageOnly(_SavesAsParent, Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor for images only: its video processor needs torchvision."""

    saved_as, video_class = "Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor"  # Qwen2.5-VL reuses Qwen2-VL's

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template)


class SmolVLMProcessorImageOnly(_SavesAsParent, SmolVLMProcessor):
    """SmolVLM's processor for images only: its video processor needs torchvision."""

    saved_as, video_class = "SmolVLMProcessor", "SmolVLMVideoProcessor"

    def __init__(self, image_processor, tokenizer, image_seq_len: int = 169, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, image_seq_len=image_seq_len, chat_template=chat_template)

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        # SmolVLM's own override only adds video frame defaults, read from the video processor.
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


IMAGE_ONLY_PROCESSORS = {
    "qwen2_vl": Qwen2VLProcessorImageOnly,
    "qwen2_5_vl": Qwen2_5_VLProcessorImageOnly,
    "smolvlm": SmolVLMProcessorImageOnly,
}


# ---------------------------------------------------------------- tokenizers


def family_tokenizer(specials: list[str], named: dict[str, str], template: str, vocab_size: int = 700) -> PreTrainedTokenizerFast:
    """A byte-level BPE on the fixed corpus with the family's special tokens; `named` maps roles to tokens."""
    bpe = train_bpe(specials, vocab_size)
    standard = {k: v for k, v in named.items() if k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    extra = {k: v for k, v in named.items() if k not in standard}
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, extra_special_tokens=extra, padding_side="left", **standard)
    tok.chat_template = template
    return tok


def _seeded(build, seed: int):
    """Build a model under `seed` without disturbing the caller's random stream."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build().eval()
    finally:
        torch.random.set_rng_state(state)


def _finish(model, tok):
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model


def _llama(tok) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


# ---------------------------------------------------------------- families


def _qwen(seed: int, v25: bool):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = family_tokenizer(specials, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "image_token": "<|image_pad|>",
                                      "video_token": "<|video_pad|>"}, QWEN2_VL)
    # 8-px patches merged 2x2: a 64x64 image is 8x8 patches and 16 image tokens; larger ones are capped.
    images = Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2, image_mean=_HALF, image_std=_HALF,
                                      size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64})
    text = dict(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                # mrope sections (temporal, height, width) sum to head_dim / 2 = 64 / 4 heads / 2 = 8
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    ids = dict(image_token_id=tok.image_token_id, video_token_id=tok.video_token_id,
               vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
               vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
    if v25:
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN, patch_size=8,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=16, fullatt_block_indexes=[1])
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
        processor = Qwen2_5_VLProcessorImageOnly(images, tok, chat_template=QWEN2_VL)
        model = _seeded(lambda: Qwen2_5_VLForConditionalGeneration(config), seed)
    else:
        vision = dict(depth=2, embed_dim=32, hidden_size=HIDDEN, mlp_ratio=2, num_heads=2, patch_size=8,
                      spatial_merge_size=2, temporal_patch_size=2)
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        processor = Qwen2VLProcessorImageOnly(images, tok, chat_template=QWEN2_VL)
        model = _seeded(lambda: Qwen2VLForConditionalGeneration(config), seed)
    return _finish(model, tok), processor


def _mllama(seed: int):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>", "<|image|>"]
    tok = family_tokenizer(specials, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                                      "pad_token": "<|finetune_right_pad_id|>", "image_token": "<|image|>"}, LLAMA3_VISION)
    # 32-px tiles, at most 2 per image: a 64x32 picture becomes two tiles side by side.
    images = MllamaImageProcessorPil(size={"height": 32, "width": 32}, max_image_tiles=2, image_mean=_HALF, image_std=_HALF)
    vision = dict(hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=2, intermediate_size=64,
                  image_size=32, patch_size=8, max_num_tiles=2, intermediate_layers_indices=[0], vision_output_dim=64,
                  supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]])
    text = dict(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, cross_attention_layers=[1], max_position_embeddings=2048,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=tok.image_token_id)
    processor = MllamaProcessor(images, tok, chat_template=LLAMA3_VISION)
    return _finish(_seeded(lambda: MllamaForConditionalGeneration(config), seed), tok), processor


def _idefics3(seed: int, smol: bool):
    first = "<|im_start|>" if smol else "<|begin_of_text|>"
    rows = [f"<row_{r}_col_{c}>" for r in range(1, 3) for c in range(1, 3)]
    specials = [first, "<|end_of_text|>", "<pad>", "<end_of_utterance>", "<image>", "<fake_token_around_image>", "<global-img>", *rows]
    template = SMOLVLM if smol else IDEFICS3
    tok = family_tokenizer(specials, {"bos_token": first, "eos_token": "<end_of_utterance>", "pad_token": "<pad>",
                                      "image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                                      "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}, template)
    # The vision tower sees 32-px tiles; a 64-px image is split 2x2 plus a global view, 4 tokens each.
    kind = SmolVLMImageProcessorPil if smol else Idefics3ImageProcessorPil
    images = kind(size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, image_mean=_HALF, image_std=_HALF)
    vision = Idefics3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=32, patch_size=8)
    seq_len = (32 // 8) ** 2 // 2**2
    if smol:
        config = SmolVLMConfig(vision_config=vision.to_dict(), text_config=_llama(tok).to_dict(), scale_factor=2,
                               image_token_id=tok.image_token_id)
        processor = SmolVLMProcessorImageOnly(images, tok, image_seq_len=seq_len, chat_template=template)
        model = _seeded(lambda: SmolVLMForConditionalGeneration(config), seed)
    else:
        config = Idefics3Config(vision_config=vision.to_dict(), text_config=_llama(tok).to_dict(), scale_factor=2,
                                image_token_id=tok.image_token_id)
        processor = Idefics3Processor(images, tok, image_seq_len=seq_len, chat_template=template)
        model = _seeded(lambda: Idefics3ForConditionalGeneration(config), seed)
    return _finish(model, tok), processor


def _siglip(image_size: int, hidden: int = 32) -> SiglipVisionConfig:
    return SiglipVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=8, vision_use_head=False)


def _paligemma(seed: int):
    tok = family_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"], {"bos_token": "<bos>", "eos_token": "<eos>",
                           "pad_token": "<pad>", "unk_token": "<unk>", "image_token": "<image>"}, PALIGEMMA)
    images = SiglipImageProcessorPil(size={"height": 32, "width": 32}, image_mean=_HALF, image_std=_HALF)
    images.image_seq_length = (32 // 8) ** 2
    # The processor adds PaliGemma's 1,024 <loc> and 128 <seg> tokens: size the vocabulary after it.
    processor = PaliGemmaProcessor(images, tok, chat_template=PALIGEMMA)
    text = GemmaConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=2048,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = PaliGemmaConfig(vision_config=_siglip(32).to_dict(), text_config=text.to_dict(),
                             image_token_index=tok.image_token_id, projection_dim=HIDDEN, hidden_size=HIDDEN)
    return _finish(_seeded(lambda: PaliGemmaForConditionalGeneration(config), seed), tok), processor


def _gemma3(seed: int):
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                "<end_of_image>", "<image_soft_token>"]
    tok = family_tokenizer(specials, {"bos_token": "<bos>", "eos_token": "<end_of_turn>", "pad_token": "<pad>",
                                      "unk_token": "<unk>", "image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                                      "eoi_token": "<end_of_image>"}, GEMMA3)
    images = Gemma3ImageProcessorPil(size={"height": 32, "width": 32}, image_mean=_HALF, image_std=_HALF)
    # 4x4 SigLIP patches average-pooled to 2x2: 4 soft tokens per image.
    processor = Gemma3Processor(images, tok, chat_template=GEMMA3, image_seq_length=4)
    text = dict(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=2048, sliding_window=64,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = Gemma3Config(text_config=text, vision_config=_siglip(32).to_dict(), mm_tokens_per_image=4,
                          boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id,
                          image_token_index=tok.image_token_id)
    return _finish(_seeded(lambda: Gemma3ForConditionalGeneration(config), seed), tok), processor


def build_tiny_family(name: str, seed: int = 0) -> tuple[torch.nn.Module, ProcessorMixin]:
    """Random-init (model, processor) of one family in TINY_FAMILIES; the same seed gives the same weights.

    Example:
        >>> model, processor = build_tiny_family("qwen2-vl")
        >>> model.config.model_type
        'qwen2_vl'
    """
    builders = {
        "llava": lambda: build_tiny(seed),
        "qwen2-vl": lambda: _qwen(seed, v25=False),
        "qwen2.5-vl": lambda: _qwen(seed, v25=True),
        "mllama": lambda: _mllama(seed),
        "idefics3": lambda: _idefics3(seed, smol=False),
        "smolvlm": lambda: _idefics3(seed, smol=True),
        "paligemma": lambda: _paligemma(seed),
        "gemma3": lambda: _gemma3(seed),
    }
    if name not in builders:
        raise ValueError(f"unknown tiny family {name!r}; expected one of {', '.join(TINY_FAMILIES)}")
    return builders[name]()

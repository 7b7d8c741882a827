"""The embedded `tiny` model: a random-init LLaVA (SigLIP tower + Llama decoder) built from config offline.

It exists so that every command runs on a laptop with no model hub: the tokenizer is a byte-level BPE
trained in-process on a fixed corpus and the weights come from a fixed seed, so `tiny` is the same model
on every machine. It knows nothing until it is fine-tuned.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

IMAGE_SIZE = 64
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]

# Plain "ROLE: text" turns. Segments are rendered one message at a time by models/encode.py, so each
# rendering of messages[:i] must be a prefix of messages[:i+1]; the assistant turn ends with </s>.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set parts = message['content'] %}{% endif %}"
    "{{ message['role'].upper() + ': ' }}"
    "{% for p in parts %}{% if p['type'] == 'image' %}{{ '<image>' }}"
    "{% elif p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# A fixed corpus: the words of the built-in tasks plus generic English, JSON and numbers. The BPE trained
# on it is deterministic, which keeps token ids stable across machines (label tests pin them).
_CORPUS = [
    "SYSTEM: USER: ASSISTANT: You are a helpful assistant that reads charts, forms and documents.",
    "Which colour is the tallest bar? Which colour is the shortest bar? How many bars are there?",
    "Is the line rising or falling? Which colour is the largest slice? rising falling",
    "red green blue orange purple black yellow white gray brown pink cyan",
    "zero one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9 10 100 1000 % $ . , ; :",
    '```json {"employee": {"name": "", "address": "", "socialSecurityNumber": ""}, "employer": '
    '{"name": "", "ein": "", "address": ""}, "earnings": {"wages": 0.0, "socialSecurityWages": 0.0, '
    '"medicareWagesAndTips": 0.0, "federalIncomeTaxWithheld": 0.0, "stateIncomeTax": 0.0, '
    '"localWagesTips": 0.0, "localIncomeTax": 0.0}, "benefits": {"dependentCareBenefits": 0.0, '
    '"nonqualifiedPlans": 0.0}, "multiStateEmployment": {"CA": {"localWagesTips": 0.0, '
    '"localIncomeTax": 0.0, "localityName": ""}}} ```',
    "Extract the fields of this W-2 form as JSON. Wage and Tax Statement Employer identification number",
    "Street St Avenue Ave Road Rd Springfield Portland Austin Denver Boston Chicago Inc LLC Corp Co",
    "the a an of and to in is it that for on with as was at by this what which how many answer question",
    "Describe the image. The chart shows a value of the total invoice receipt date amount table row column",
]


def train_bpe(special_tokens: list[str], vocab_size: int, unk_token: str | None = None) -> Tokenizer:
    """A byte-level BPE trained on the fixed corpus (a few milliseconds); the same inputs give the same ids."""
    bpe = Tokenizer(models.BPE(unk_token=unk_token))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return bpe


def build_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """The tiny LLaVA's tokenizer."""
    bpe = train_bpe(SPECIAL_TOKENS, vocab_size, unk_token="<unk>")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_processor() -> LlavaProcessor:
    """The LLaVA processor of the tiny model: 64 px images, 64 image tokens each."""
    tok = build_tokenizer()
    images = SiglipImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=0,
    )


def tiny_config(tok: PreTrainedTokenizerFast, hidden: int = 128, layers: int = 2) -> LlavaConfig:
    """Config of the tiny LLaVA; every id comes from the tokenizer so nothing can drift."""
    vision = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        vision_use_head=False,  # LLaVA reads patch features; SigLIP's pooling head would be dead weight
    )
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.image_token_id,
        image_seq_length=IMAGE_TOKENS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )


def build_tiny(seed: int = 0) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Build the random-init tiny model and its processor; the same seed gives the same weights."""
    processor = build_processor()
    config = tiny_config(processor.tokenizer)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlavaForConditionalGeneration(config)
    finally:
        # Building the model must not disturb the caller's random stream.
        torch.random.set_rng_state(generator_state)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.bos_token_id = processor.tokenizer.bos_token_id
    return model.eval(), processor

"""Loading a model, its processor and its LoRA adapters: the embedded `tiny`, a `tiny-<family>`, a local
folder, or a hub id. Every command (train, eval, serve, export) loads through `load_model`, so the base an
adapter was trained on is the base it is evaluated and served on.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import torch
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
from transformers.processing_utils import ProcessorMixin
from transformers.utils import cached_file

from vlmtune.errors import VlmtuneError
from vlmtune.io import ordinary_permissions, write_json
from vlmtune.models.tiny import build_tiny
from vlmtune.models.tiny_families import IMAGE_ONLY_PROCESSORS, TINY_FAMILIES, build_tiny_family

TINY = "tiny"
TINY_PREFIX = "tiny-"
# The built-in tiny models are one model each, whatever run loads them: their weights come from this seed,
# never from a run's own seed (which orders data and initialises LoRA), so adapters always meet their base.
TINY_SEED = 0
# Written into every adapter folder vlmtune saves: which base it was trained on, checked when it is loaded.
BASE_FILE = "vlmtune_base.json"
# One request this long tells whether the hub answers; the libraries' own retries would take minutes to fail.
HUB_PROBE_SECONDS = 3.0


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(name: str, device: str = "auto", load_in_4bit: bool = False, adapters: dict[str, Path] | None = None,
               on_processor: Callable[[object], None] | None = None):
    """Return (model, processor) on `device`; `name` is 'tiny', 'tiny-<family>', a folder, or a hub id.

    Hub ids work wherever the hub is reachable or the model is cached; offline, a clear error says so.
    `load_in_4bit` (QLoRA) quantizes the weights with bitsandbytes NF4 as they load. `adapters` (model id ->
    folder of a saved LoRA adapter) wraps the model in every adapter, each checked against the base it was
    trained on; with adapters the model comes back in eval mode. `on_processor(processor)` runs as soon as the
    processor is loaded, before the weights (after them for the built-in tiny models, which are built together):
    eval starts encoding prompts there, so the first batch is ready about when the weights are.
    """
    model, processor = _load_base(name, resolve_device(device), load_in_4bit, on_processor or (lambda _: None))
    if adapters:
        model = attach_adapters(model, adapters, name)
    return model, processor


def _load_base(name: str, target: torch.device, load_in_4bit: bool, on_processor: Callable[[object], None]):
    if load_in_4bit:
        return _load_4bit(name, target, on_processor)
    if name == TINY or (name.startswith(TINY_PREFIX) and not Path(name).exists()):
        model, processor = build_tiny(TINY_SEED) if name == TINY else _build_tiny_family(name)
        on_processor(processor)
        return model.to(target), processor
    dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
    source = local_source(name)
    processor = _loaded(name, lambda: load_processor(source))
    if not isinstance(processor, ProcessorMixin):
        # AutoProcessor quietly returns a bare tokenizer when the folder's processor class is unknown.
        raise VlmtuneError(f"--model {name!r}: expected a multimodal processor, found {type(processor).__name__}")
    on_processor(processor)
    return _loaded(name, lambda: AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)).to(target), processor


def _loaded(name: str, load: Callable[[], object]):
    """`load()`, its library errors said as the user's: the folder or hub id is not a model vlmtune can load
    (a damaged weights file raises safetensors' own error type)."""
    try:
        return load()
    except (OSError, ValueError, SafetensorError) as e:
        kind = "folder" if Path(name).exists() else "hub id"
        raise VlmtuneError(f"--model {name!r}: could not load it as a {kind} (expected a vision-language model with a processor): {e}") from None


def _load_4bit(name: str, target: torch.device, on_processor: Callable[[object], None]):
    """QLoRA's base: NF4 weights, bf16 compute, prepared for k-bit training (norms in fp32, input grads on)."""
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    if name == TINY or (name.startswith(TINY_PREFIX) and not Path(name).exists()):
        raise VlmtuneError(f"--model {name!r} with method qlora: expected a saved model folder or hub id to quantize; "
                           "the built-in tiny models are too small to need it (use --method full or lora)")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                               bnb_4bit_use_double_quant=True)
    source = local_source(name)
    processor = load_processor(source)
    on_processor(processor)
    model = AutoModelForImageTextToText.from_pretrained(source, quantization_config=quant, device_map={"": target.index or 0})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False), processor


def _build_tiny_family(name: str):
    family = name[len(TINY_PREFIX):]
    if family not in TINY_FAMILIES:
        choices = ", ".join(TINY_PREFIX + f for f in TINY_FAMILIES)
        raise VlmtuneError(f"--model {name!r}: expected 'tiny', one of {choices}, a folder or a hub id")
    return build_tiny_family(family, TINY_SEED)


def load_processor(name: str):
    """AutoProcessor, except where its video half cannot load (no torchvision, or a folder saved without a
    video processor, as vlmtune's image-only Qwen2-VL / SmolVLM processors are): then the image-only
    variant of the same processor, built from the folder's own image processor and tokenizer."""
    try:
        return AutoProcessor.from_pretrained(name)
    except (ImportError, OSError, ValueError):
        image_only = IMAGE_ONLY_PROCESSORS.get(AutoConfig.from_pretrained(name).model_type)
        if image_only is None:
            raise
        processor = image_only.from_pretrained(name)
        processor.video_settings = _video_settings(name)  # saved again as it came, so exports stay standard
        return processor


def _video_settings(name: str) -> dict | None:
    """The video processor config a folder or hub id has (nested in processor_config.json, or its own file)."""
    for filename, key in (("processor_config.json", "video_processor"), ("video_preprocessor_config.json", None)):
        path = cached_file(name, filename, _raise_exceptions_for_missing_entries=False)
        if path:
            settings = json.loads(Path(path).read_text(encoding="utf-8"))
            settings = settings.get(key) if key else settings
            if isinstance(settings, dict) and settings.get("video_processor_type"):
                return settings
    return None


# ---------------------------------------------------------------- hub ids without a hub
def local_source(name: str) -> str:
    """What `from_pretrained` should load for `name`: the name itself, or, when the hub cannot be reached, the
    folder of its copy in the local cache. Loading that folder asks the hub nothing (transformers would still
    look for files such as adapter_config.json there, retrying for minutes); an uncached id fails at once.
    """
    if Path(name).exists():
        return name
    offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else _hub_unreachable()
    if not offline:
        return name
    try:
        return snapshot_download(name, local_files_only=True)
    except HFValidationError:  # not of the form org/name: a mistyped folder, say
        raise VlmtuneError(f"--model {name!r}: expected 'tiny', 'tiny-<family>', an existing folder or a hub id (org/name), "
                           "found none of these") from None
    except LocalEntryNotFoundError:
        raise VlmtuneError(f"--model {name!r}: expected a local folder or a hub id in the Hugging Face cache ({constants.HF_HUB_CACHE}), "
                           f"found neither, and the hub cannot be reached ({offline}); run `hf download {name}` where there is "
                           "network and copy the cache here, or set HF_HUB_CACHE to a cache that has it "
                           "(HF_HUB_OFFLINE=1 loads from the cache without asking the hub)") from None


def _hub_unreachable() -> str:
    """Why the hub cannot be reached, or '' when it answers (any HTTP status counts as an answer)."""
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=HUB_PROBE_SECONDS).close()
    except urllib.error.HTTPError:
        return ""
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):  # it answered, in a way the libraries may still accept
            return ""
        return f"no answer from {constants.ENDPOINT}: {e.reason}"
    except OSError as e:  # a timeout
        return f"no answer from {constants.ENDPOINT} within {HUB_PROBE_SECONDS:g} s: {e}"
    return ""


def save_pretrained(model, processor, folder: Path) -> None:
    """Save a model (or adapter) and its processor so that plain transformers loads the folder, with ordinary
    file modes (safetensors writes its files 0600)."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    ordinary_permissions(folder)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


# ---------------------------------------------------------------- adapters and the base they belong to
def base_fingerprint(model) -> str:
    """A short hash that tells two bases apart: names, shapes and leading values of the weights outside Linear
    layers (embeddings, convolutions, norms), rounded to bf16. Linear weights are left out because QLoRA
    quantizes them, and a base must fingerprint the same loaded in 4 bits, bf16 or fp32."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    linear = {f"{m}.{p}" for m, module in base.named_modules() if isinstance(module, torch.nn.Linear)
              for p, _ in module.named_parameters(recurse=False)}
    digest = hashlib.blake2b(digest_size=8)
    for name, p in base.named_parameters():
        if name in linear or not p.is_floating_point():
            continue
        head = p.detach().flatten()[:64].to("cpu", torch.bfloat16).float()
        digest.update(f"{name}{tuple(p.shape)}".encode())
        digest.update(head.numpy().tobytes())
    return digest.hexdigest()


def write_base_identity(folder: Path, model_name: str, model) -> None:
    """Record in a saved adapter folder which base it was trained on."""
    write_json(Path(folder) / BASE_FILE, {"format_version": 1, "model": model_name, "fingerprint": base_fingerprint(model)})


def check_base_identity(folder: Path, model, model_name: str, label: str) -> None:
    """Refuse an adapter whose recorded base is not the loaded one (adapters from elsewhere carry no record)."""
    path = Path(folder) / BASE_FILE
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        expected = recorded["fingerprint"]
    except (ValueError, KeyError, TypeError):
        raise VlmtuneError(f"{label}: {path}: expected a JSON object with the base model's fingerprint, found an unreadable file") from None
    found = base_fingerprint(model)
    if found != expected:
        raise VlmtuneError(f"{label}: the adapter was trained on base {recorded.get('model')!r} (fingerprint {expected}), but the base loaded "
                           f"from {model_name!r} has fingerprint {found}; load the base it was trained on")


def attach_adapters(model, adapters: dict[str, Path], model_name: str = ""):
    """Wrap `model` with every LoRA adapter, each under its own name (the first is active)."""
    from peft import PeftModel

    wrapped = None
    for name, path in adapters.items():
        label = f"--adapter {name}={path}"
        if not (Path(path) / "adapter_config.json").is_file():
            # Checked here: peft would otherwise take the folder name for a hub id and retry the network.
            raise VlmtuneError(f"{label}: expected a folder with adapter_config.json (a saved LoRA adapter), found none")
        check_base_identity(path, model, model_name, label)
        try:
            if wrapped is None:
                wrapped = PeftModel.from_pretrained(model, str(path), adapter_name=name)
            else:
                wrapped.load_adapter(str(path), adapter_name=name)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise VlmtuneError(f"{label}: expected a folder with a saved LoRA adapter for this model: {e}") from None
    return wrapped.eval()

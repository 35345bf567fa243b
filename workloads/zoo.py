"""Model zoo: ``-w hf:NAME`` builds a Hugging Face ``transformers`` architecture from a
config, with random weights (speed, memory and energy do not depend on the weight
values; nothing is ever downloaded).

* ``hf:resnet-50``, ``hf:vit-base``, ``hf:bert-base``, ``hf:gpt2``, ``hf:llama-1b``:
  configs shipped here (:data:`ZOO`), each with a ``full`` preset (the published
  architecture: parameter counts in :data:`ZOO`, tested) and a ``tiny`` one (a reduced
  config of the same class, for tests). ``full`` is the default size, so ``-w mlp -w
  hf:gpt2 --size small`` runs the small MLP beside the real GPT-2; ``-w hf:gpt2@tiny``
  picks a preset for one workload.
* ``hf:PATH``: a local directory holding a ``config.json`` (e.g. a model cache
  snapshot); the model class comes from its ``architectures`` (else ``AutoModel``).
  Read with ``local_files_only``; the file's SHA-256 is recorded.

FLOPs have no formula here: the FLOP counter counts them (2 per multiply-add). The
parameter count is the model's own (``parameters()``, tied weights once), counted on
the meta device (no memory, no weights). Training uses the model's task loss:
next-token cross-entropy for causal LMs, cross-entropy over the labels for image
classifiers, and the mean of the last hidden state for encoders without a head
(``BertModel``), which keeps the published parameter count.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from harness.api import InputSpec, SkipCell, Workload, WorkloadConfig, WorkloadProvider

VISION, ENCODER, CAUSAL_LM = "vision", "encoder", "causal_lm"
KINDS = (VISION, ENCODER, CAUSAL_LM)


def _items(d: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A config mapping as sorted, hashable (key, value) pairs (lists become tuples)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


@dataclass(frozen=True)
class HFConfig(WorkloadConfig):
    """One zoo preset: the transformers classes, their config arguments and the input shape."""

    num_classes: int = 1000
    kind: str = VISION
    config_class: str = ""
    model_class: str = ""
    hf: tuple[tuple[str, Any], ...] = ()  # the transformers config's keyword arguments
    image_size: int = 0
    seq_len: int = 0
    vocab_size: int = 0
    published_params: int | None = None
    source: str = "dl-harness zoo"  # or the local config.json it was read from
    source_sha256: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == VISION and self.image_size < 1:
            raise ValueError("a vision model needs image_size >= 1")
        if self.kind != VISION and (self.seq_len < 1 or self.vocab_size < 2):
            raise ValueError("a text model needs seq_len >= 1 and vocab_size >= 2")

    def hf_kwargs(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.hf}


@dataclass(frozen=True)
class ZooEntry:
    description: str
    full: HFConfig
    tiny: HFConfig
    batch: int  # default batch size of the full model
    keras: str | None = None  # keras.applications builder with the same architecture


_LLAMA_1B = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                 num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                 tie_word_embeddings=False)

#: The shipped configs. ``published_params`` are the architectures' published counts
#: (torchvision resnet50 / vit_b_16, bert-base-uncased, gpt2, TinyLlama-1.1B), tested.
ZOO: dict[str, ZooEntry] = {
    "resnet-50": ZooEntry(
        "ResNet-50 image classifier (transformers ResNetForImageClassification, 1000 classes, 224x224)",
        full=HFConfig(num_classes=1000, kind=VISION, config_class="ResNetConfig",
                      model_class="ResNetForImageClassification", hf=_items({"num_labels": 1000}),
                      image_size=224, published_params=25_557_032),
        tiny=HFConfig(num_classes=10, kind=VISION, config_class="ResNetConfig",
                      model_class="ResNetForImageClassification",
                      hf=_items({"num_labels": 10, "embedding_size": 16, "hidden_sizes": [16, 32],
                                 "depths": [1, 1], "layer_type": "basic"}), image_size=32),
        batch=8, keras="ResNet50"),
    "vit-base": ZooEntry(
        "ViT-B/16 image classifier (transformers ViTForImageClassification, 1000 classes, 224x224)",
        full=HFConfig(num_classes=1000, kind=VISION, config_class="ViTConfig",
                      model_class="ViTForImageClassification", hf=_items({"num_labels": 1000}),
                      image_size=224, published_params=86_567_656),
        tiny=HFConfig(num_classes=10, kind=VISION, config_class="ViTConfig", model_class="ViTForImageClassification",
                      hf=_items({"num_labels": 10, "hidden_size": 64, "num_hidden_layers": 2,
                                 "num_attention_heads": 2, "intermediate_size": 128, "image_size": 32,
                                 "patch_size": 8}), image_size=32),
        batch=8),
    "bert-base": ZooEntry(
        "BERT-base encoder (transformers BertModel, 12 layers, 768 wide, sequence 128)",
        full=HFConfig(num_classes=2, kind=ENCODER, config_class="BertConfig", model_class="BertModel",
                      hf=(), seq_len=128, vocab_size=30522, published_params=109_482_240),
        tiny=HFConfig(num_classes=2, kind=ENCODER, config_class="BertConfig", model_class="BertModel",
                      hf=_items({"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2,
                                 "num_attention_heads": 2, "intermediate_size": 128,
                                 "max_position_embeddings": 128}), seq_len=16, vocab_size=1000),
        batch=8),
    "gpt2": ZooEntry(
        "GPT-2 small causal LM (transformers GPT2LMHeadModel, 124M, tied embeddings, sequence 128)",
        full=HFConfig(num_classes=2, kind=CAUSAL_LM, config_class="GPT2Config", model_class="GPT2LMHeadModel",
                      hf=(), seq_len=128, vocab_size=50257, published_params=124_439_808),
        tiny=HFConfig(num_classes=2, kind=CAUSAL_LM, config_class="GPT2Config", model_class="GPT2LMHeadModel",
                      hf=_items({"vocab_size": 1000, "n_embd": 64, "n_layer": 2, "n_head": 2, "n_positions": 128,
                                 "bos_token_id": 0, "eos_token_id": 0}), seq_len=16, vocab_size=1000),
        batch=4),
    "llama-1b": ZooEntry(
        "Llama-style 1.1B decoder (transformers LlamaForCausalLM in the TinyLlama-1.1B shape: 22 layers, "
        "2048 wide, grouped-query attention 32/4, sequence 128)",
        full=HFConfig(num_classes=2, kind=CAUSAL_LM, config_class="LlamaConfig", model_class="LlamaForCausalLM",
                      hf=_items(_LLAMA_1B), seq_len=128, vocab_size=32000, published_params=1_100_048_384),
        tiny=HFConfig(num_classes=2, kind=CAUSAL_LM, config_class="LlamaConfig", model_class="LlamaForCausalLM",
                      hf=_items({"vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
                                 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                 "max_position_embeddings": 256, "bos_token_id": 0, "eos_token_id": 0}),
                      seq_len=16, vocab_size=1000),
        batch=1),
}

WEIGHTS = "random initialisation (no pretrained weights are loaded or downloaded)"


def _offline() -> None:
    """Never touch the network from a zoo build (a local config.json included)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def transformers_module() -> Any:
    """``transformers``, imported on first use (never in the parent process); a missing
    install skips the cell with the reason."""
    _offline()
    try:
        import transformers
    except Exception as e:  # noqa: BLE001 - any import failure is a reason to skip
        raise SkipCell(f"Hugging Face transformers cannot be imported here: {type(e).__name__}: {e} "
                       "(pip install -r requirements.txt)") from None
    transformers.logging.set_verbosity_error()
    return transformers


def hf_config_object(cfg: HFConfig) -> Any:
    """The transformers config object of a preset (eager attention is not forced: the
    default, SDPA, is what users run and what the FLOP counter counts)."""
    T = transformers_module()
    if cfg.source_sha256 is not None:  # a local config.json
        return T.AutoConfig.from_pretrained(str(Path(cfg.source).parent), local_files_only=True)
    return getattr(T, cfg.config_class)(**cfg.hf_kwargs())


def model_class(cfg: HFConfig) -> Any:
    T = transformers_module()
    cls = getattr(T, cfg.model_class, None)
    if cls is None:
        raise SkipCell(f"transformers {T.__version__} has no class {cfg.model_class!r}")
    return cls


@functools.lru_cache(maxsize=32)
def meta_param_count(cfg: HFConfig) -> int:
    """``parameters()`` of the architecture built on the meta device (tied weights once)."""
    import torch

    with torch.device("meta"):
        model = model_class(cfg)(hf_config_object(cfg))
    return int(sum(p.numel() for p in model.parameters()))


class HFWorkload(Workload):
    """A transformers architecture from a config (see the module doc)."""

    Config = HFConfig
    modes: ClassVar[tuple[str, ...]] = ("inference", "training")
    default_size: ClassVar[str | None] = "full"
    keras: ClassVar[str | None] = None

    def input_specs(self) -> Sequence[InputSpec]:
        c: HFConfig = self.config  # type: ignore[assignment]
        if c.kind == VISION:
            return [InputSpec("pixel_values", (3, c.image_size, c.image_size), "float32")]
        return [InputSpec("input_ids", (c.seq_len,), "int64", high=c.vocab_size)]

    def analytic_params(self) -> int:
        """The architecture's parameter count, counted on the meta device."""
        return meta_param_count(self.config)  # type: ignore[arg-type]

    def build_torch(self) -> Any:
        from harness.workloads import _hf_models

        cfg: HFConfig = self.config  # type: ignore[assignment]
        model = model_class(cfg)(hf_config_object(cfg))
        return _hf_models.HFModule(model, cfg.kind)

    def supports_backend(self, backend: str) -> bool:
        if backend == "tensorflow":
            return self.keras is not None
        return super().supports_backend(backend)

    def unsupported_reason(self, backend: str) -> str:
        if backend == "tensorflow":
            return (f"{self.name!r}: Keras ships no {self.config.model_class} (keras.applications has the same "  # type: ignore[attr-defined]
                    "architecture only for hf:resnet-50; keras-hub backbones are not installed here)")
        return super().unsupported_reason(backend)

    def build_tensorflow(self) -> Any:
        """The Keras application with the same architecture (full size only)."""
        c: HFConfig = self.config  # type: ignore[assignment]
        if self.keras is None:
            raise SkipCell(f"{self.name!r} has no Keras equivalent")
        if self.size != "full":
            raise SkipCell(f"{self.name!r}: keras.applications.{self.keras} has no reduced {self.size!r} config "
                           "matching the transformers one; use the full size")
        import keras

        builder = getattr(keras.applications, self.keras)
        return builder(weights=None, input_shape=(c.image_size, c.image_size, 3), classes=c.num_classes)

    def tensorflow_inputs(self, arrays: Sequence[Any]) -> list[Any]:
        """NCHW images as NHWC for Keras."""
        return [a.transpose(0, 2, 3, 1).copy() if a.ndim == 4 else a for a in arrays]

    def loss(self, backend: str, outputs: Any, labels: Any, inputs: Sequence[Any]) -> Any:
        c: HFConfig = self.config  # type: ignore[assignment]
        if backend != "torch" or c.kind == VISION:
            return None  # cross-entropy of the logits against the labels
        if c.kind == CAUSAL_LM:  # next-token prediction, as the model's own loss computes it
            import torch.nn.functional as F

            logits = outputs[:, :-1].float()
            target = inputs[0][:, 1:]
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        return outputs.float().mean()  # an encoder without a head: the mean of its last hidden state

    def model_info(self, backend: str) -> dict[str, Any]:
        c: HFConfig = self.config  # type: ignore[assignment]
        info: dict[str, Any] = {
            "provider": "hf", "source": c.source, "source_sha256": c.source_sha256,
            "architecture": c.model_class, "config_class": c.config_class, "config": c.hf_kwargs(),
            "kind": c.kind, "weights": WEIGHTS, "published_params": c.published_params,
        }
        if backend == "tensorflow" and self.keras is not None:
            info["architecture"] = f"keras.applications.{self.keras}"
            info["differs_from_torch"] = KERAS_DIFFERENCES.get(self.keras)
        if backend == "torch":
            try:
                import transformers

                info["transformers_version"] = transformers.__version__
            except Exception:  # noqa: BLE001 - informational only
                pass
        return info


#: How the Keras architecture differs from the transformers one when their counts do.
KERAS_DIFFERENCES = {
    "ResNet50": ("keras.applications.ResNet50 has 25,636,712 parameters against 25,557,032: its convolutions "
                 "have biases (+26,560, trainable) and Keras counts the batch-norm moving mean/variance "
                 "(+53,120, not trainable); transformers and torchvision use bias-free convolutions before "
                 "batch norm. Same layers, same FLOPs up to the biases."),
}


def zoo_class(name: str) -> type[HFWorkload]:
    entry = ZOO[name]
    return type(f"HF_{name.replace('-', '_')}", (HFWorkload,), {
        "name": f"hf:{name}", "description": entry.description,
        "presets": {"full": entry.full, "tiny": entry.tiny},
        "default_batch_size": {"full": entry.batch, "tiny": 2},
        "keras": entry.keras, "__module__": __name__, "modes": _modes(entry.full.kind),
    })


def _modes(kind: str) -> tuple[str, ...]:
    """Causal LMs also run ``generate`` (every token timed, docs/generation.md)."""
    return ("inference", "training", "generate") if kind == CAUSAL_LM else ("inference", "training")


def _is_path(ref: str) -> bool:
    return "/" in ref or ref.startswith(".") or ref.startswith("~") or os.sep in ref


def _config_json(ref: str) -> Path:
    p = Path(ref).expanduser()
    f = p / "config.json" if p.is_dir() or not p.name.endswith(".json") else p
    if not f.is_file():
        raise ValueError(f"hf:{ref}: no config.json at {f} (give a directory holding a Hugging Face config.json, "
                         f"or a zoo name: {', '.join(ZOO)})")
    return f


def local_class(ref: str) -> type[HFWorkload]:
    """A workload for a local ``config.json``: the class from its ``architectures``."""
    f = _config_json(ref)
    raw = f.read_bytes()
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"hf:{ref}: {f} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"hf:{ref}: {f} does not hold a JSON object")
    archs = data.get("architectures") or []
    arch = str(archs[0]) if archs else "AutoModel"
    if arch.endswith(("ForCausalLM", "LMHeadModel")):
        kind = CAUSAL_LM
    elif arch.endswith("ForImageClassification") or "pixel" in str(data.get("main_input_name", "")):
        kind = VISION
    else:
        kind = ENCODER
    labels = data.get("id2label") or {}
    cfg = HFConfig(
        num_classes=max(2, len(labels) or int(data.get("num_labels", 2) or 2)), kind=kind,
        config_class=str(data.get("model_type", "")), model_class=arch, hf=(),
        image_size=int(data.get("image_size", 224) or 224) if kind == VISION else 0,
        seq_len=min(128, int(data.get("max_position_embeddings") or data.get("n_positions") or data.get("n_ctx")
                             or 128)) if kind != VISION else 0,
        vocab_size=int(data.get("vocab_size", 0) or 0) if kind != VISION else 0,
        source=str(f.resolve()), source_sha256=hashlib.sha256(raw).hexdigest())
    return type("HF_local", (HFWorkload,), {
        "name": f"hf:{ref}", "description": f"{arch} from {f}", "presets": {"full": cfg},
        "default_batch_size": {"full": 1}, "__module__": __name__, "modes": _modes(kind),
    })


class HFProvider(WorkloadProvider):
    """``hf:NAME`` (a shipped config) or ``hf:PATH`` (a directory with a config.json)."""

    scheme = "hf"
    description = "Hugging Face transformers architectures built from a config, random weights"
    usage = "hf:NAME (" + ", ".join(ZOO) + ") or hf:PATH (a directory holding a config.json); NAME@tiny for tests"

    def known(self) -> Mapping[str, str]:
        return {k: v.description for k, v in ZOO.items()}

    def preload(self, ref: str) -> Sequence[str]:
        """transformers and the model's modeling module (~5 s per cell otherwise)."""
        mods = ["transformers", "transformers.modeling_utils", "transformers.generation"]
        entry = ZOO.get(ref)
        if entry is not None:
            family = entry.full.config_class.removesuffix("Config").lower()
            mods.append(f"transformers.models.{family}.modeling_{family}")
        return mods

    def check(self, ref: str) -> None:
        if ref in ZOO:
            return
        if _is_path(ref):
            _config_json(ref)
            return
        from harness.core.registry import close_matches

        raise ValueError(f"unknown model 'hf:{ref}'; the zoo has: {', '.join(ZOO)} "
                         f"(or give hf:PATH to a directory holding a config.json){close_matches(ref, list(ZOO))}")

    def workload_class(self, ref: str) -> type[Workload]:
        self.check(ref)
        return zoo_class(ref) if ref in ZOO else local_class(ref)


class _OptionalZooProvider(WorkloadProvider):
    """``torchvision:NAME`` / ``timm:NAME``: built where the library imports; otherwise
    the cell is skipped with the import error (the torchvision wheel on the package index
    is a CUDA build that does not load beside the CPU torch wheel; timm needs it)."""

    library: ClassVar[str]

    def check(self, ref: str) -> None:
        if not ref or not all(ch.isalnum() or ch in "_-." for ch in ref):
            raise ValueError(f"bad model name {self.scheme}:{ref!r}: give {self.usage}")

    def workload_class(self, ref: str) -> type[Workload]:
        self.check(ref)
        return type(f"{self.scheme}_{ref}", (LibraryWorkload,), {
            "name": f"{self.scheme}:{ref}", "description": f"{self.library} model {ref} (random weights)",
            "library": self.library, "model_name": ref, "__module__": __name__,
        })


@dataclass(frozen=True)
class LibraryConfig(WorkloadConfig):
    num_classes: int = 1000
    image_size: int = 224


class LibraryWorkload(Workload):
    """A torchvision / timm image model by name, random weights, 224x224."""

    Config = LibraryConfig
    presets: ClassVar[Mapping[str, WorkloadConfig]] = {"full": LibraryConfig()}
    default_batch_size: ClassVar[Mapping[str, int]] = {"full": 8}
    default_size: ClassVar[str | None] = "full"
    library: ClassVar[str]
    model_name: ClassVar[str]

    def _lib(self) -> Any:
        import importlib

        try:
            return importlib.import_module(self.library)
        except Exception as e:  # noqa: BLE001 - the nms RuntimeError of a mismatched wheel included
            raise SkipCell(f"{self.library} cannot be imported here: {type(e).__name__}: {str(e)[:200]}") from None

    def input_specs(self) -> Sequence[InputSpec]:
        return [InputSpec("image", (3, self.config.image_size, self.config.image_size), "float32")]  # type: ignore[attr-defined]

    def _build(self, device: str = "cpu") -> Any:
        lib = self._lib()
        if self.library == "torchvision":
            return lib.models.get_model(self.model_name, weights=None, num_classes=self.num_classes)
        return lib.create_model(self.model_name, pretrained=False, num_classes=self.num_classes)

    def analytic_params(self) -> int:
        return int(sum(p.numel() for p in self._build().parameters()))

    def build_torch(self) -> Any:
        return self._build()

    def model_info(self, backend: str) -> dict[str, Any]:
        return {"provider": self.library, "architecture": self.model_name, "weights": WEIGHTS}


class TorchvisionProvider(_OptionalZooProvider):
    scheme = "torchvision"
    library = "torchvision"
    description = "torchvision.models by name, random weights (skipped with the reason where torchvision cannot load)"
    usage = "torchvision:NAME (e.g. torchvision:resnet50)"


class TimmProvider(_OptionalZooProvider):
    scheme = "timm"
    library = "timm"
    description = "timm models by name, random weights (skipped with the reason where timm cannot load)"
    usage = "timm:NAME (e.g. timm:resnet50)"

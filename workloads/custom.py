"""Your own model: ``-w custom:path/to/file.py:factory`` or ``-w custom:package.module:factory``.

The factory is called as ``factory(batch_size)`` and returns ``(model, inputs)`` or
``(model, inputs, loss_fn)``:

* ``model``: a ``torch.nn.Module`` (``-b torch``, ``-b onnxruntime``) or a
  ``keras.Model`` (``-b tensorflow``);
* ``inputs``: one batch, a tensor, a tuple/list of tensors (passed positionally) or a
  dict of tensors (passed as keyword arguments);
* ``loss_fn(outputs)`` (optional): the training loss. Without it, training uses the
  model's own loss when its output carries one (``outputs.loss`` / ``outputs["loss"]``,
  as Hugging Face models return when given labels), otherwise the mean of the output.

The factory is imported and called inside the cell's worker process: an import error,
a wrong return type or a shape error on the first step becomes a ``failed`` cell with
your traceback, and the sweep goes on. A file path that does not exist is a usage
error (exit 2) before anything runs. The cell records the factory and the SHA-256 of
its file (``model.source_sha256``), so history and compare never mix two versions of
your model silently. See docs/custom-models.md for a complete example.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from harness.api import InputSpec, SkipCell, Workload, WorkloadConfig, WorkloadProvider

USAGE = "custom:path/to/file.py:factory or custom:package.module:factory"


def parse_ref(ref: str) -> tuple[str, str, bool]:
    """(file path or module name, factory name, is a file) of ``ref``; ``ValueError``
    for a malformed reference or a file that does not exist."""
    target, sep, factory = ref.rpartition(":")
    if not sep or not target or not factory.isidentifier():
        raise ValueError(f"bad custom model {'custom:' + ref!r}: give {USAGE}")
    if target.endswith(".py") or "/" in target or target.startswith("."):
        p = Path(target).expanduser()
        if not p.is_file():
            raise ValueError(f"custom model file not found: {p} (from {'custom:' + ref!r}; give {USAGE})")
        return str(p.resolve()), factory, True
    if not all(part.isidentifier() for part in target.split(".")):
        raise ValueError(f"bad module name {target!r} in {'custom:' + ref!r}: give {USAGE}")
    return target, factory, False


def _module_file(target: str, is_file: bool) -> str | None:
    if is_file:
        return target
    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def file_sha256(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def load_factory(target: str, factory: str, is_file: bool) -> Any:
    """Import the user's module (a file under a private module name) and return the factory."""
    if is_file:
        name = "dl_harness_custom_" + hashlib.sha256(target.encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, target)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {target} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise TypeError(f"{target} has no callable {factory!r}")
    return fn


@dataclass(frozen=True)
class CustomConfig(WorkloadConfig):
    num_classes: int = 2  # labels are not used: the loss is the model's own


class CustomWorkload(Workload):
    """A user's model from a factory (see the module doc)."""

    Config = CustomConfig
    presets: ClassVar[Mapping[str, WorkloadConfig]] = {"default": CustomConfig()}
    default_batch_size: ClassVar[Mapping[str, int]] = {"default": 8}
    default_size: ClassVar[str | None] = "default"
    # generate: for factories returning a causal LM with the Hugging Face generation interface
    modes: ClassVar[tuple[str, ...]] = ("inference", "training", "generate")
    target: ClassVar[str]
    factory: ClassVar[str]
    is_file: ClassVar[bool]

    def __init__(self, size: str = "default", config: WorkloadConfig | None = None) -> None:
        super().__init__(size, config)
        self._fn: Any = None  # the factory, imported once per workload
        # the cell's own batch: the first one made (the backend asks for the cell's inputs
        # before it builds the model); its model is the one built and its loss_fn the loss
        self._made: tuple[int, Any, Any, Any] | None = None  # (batch size, model, inputs, loss_fn)
        # inputs of other batch sizes (ONNX export / calibration batches): the factory's
        # model for them is dropped at once, so a second model never inflates peak memory
        self._other_inputs: dict[int, Any] = {}

    # -- the factory ------------------------------------------------------------------
    def _make(self, batch_size: int) -> tuple[Any, Any, Any]:
        """(model, inputs, loss_fn) of the cell's batch (the first one made); for another
        batch size, (None, its inputs, None): the user's module is imported once and
        the cell's model and loss are never replaced by another call's."""
        if self._made is not None:
            if self._made[0] == batch_size:
                return self._made[1], self._made[2], self._made[3]
            if batch_size not in self._other_inputs:
                self._other_inputs[batch_size] = self._call(batch_size)[1]
            return None, self._other_inputs[batch_size], None
        model, inputs, loss_fn = self._call(batch_size)
        self._made = (batch_size, model, inputs, loss_fn)
        return model, inputs, loss_fn

    def _call(self, batch_size: int) -> tuple[Any, Any, Any]:
        """``factory(batch_size)``, checked: (model, inputs, loss_fn or None)."""
        if self._fn is None:
            self._fn = load_factory(self.target, self.factory, self.is_file)
        out = self._fn(batch_size)
        if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
            raise TypeError(f"{self.factory}({batch_size}) must return (model, inputs) or (model, inputs, loss_fn), "
                            f"got {type(out).__name__}")
        model, inputs = out[0], out[1]
        loss_fn = out[2] if len(out) == 3 else None
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"the third element returned by {self.factory} must be callable loss_fn(outputs), "
                            f"got {type(loss_fn).__name__}")
        return model, inputs, loss_fn

    def _framework(self, model: Any) -> str:
        mod = type(model).__module__.split(".")[0]
        for base in type(model).__mro__:
            root = base.__module__.split(".")[0]
            if root in ("torch", "keras", "tensorflow", "tf_keras"):
                return "torch" if root == "torch" else "tensorflow"
        raise TypeError(f"{self.factory} returned a {mod}.{type(model).__name__}: the model must be a "
                        "torch.nn.Module or a keras.Model")

    def _keys_and_arrays(self, inputs: Any) -> tuple[list[str] | None, list[Any]]:
        """(keyword names or None for positional, the inputs as numpy arrays)."""
        import numpy as np

        def arr(x: Any) -> Any:
            if hasattr(x, "detach"):  # a torch tensor
                return x.detach().cpu().numpy()
            return np.asarray(x)

        if isinstance(inputs, Mapping):
            return [str(k) for k in inputs], [arr(v) for v in inputs.values()]
        if isinstance(inputs, (tuple, list)):
            return None, [arr(v) for v in inputs]
        return None, [arr(inputs)]

    # -- Workload ---------------------------------------------------------------------
    def make_inputs(self, batch_size: int, seed: int = 0) -> tuple[list[Any], Any]:
        """The factory's batch, as numpy arrays (labels are unused zeros)."""
        import numpy as np

        _, inputs, _ = self._make(batch_size)
        _, arrays = self._keys_and_arrays(inputs)
        return arrays, np.zeros((batch_size,), dtype=np.int64)

    def input_specs(self) -> Sequence[InputSpec]:
        b = self._made[0] if self._made is not None else self.batch_size_for()
        _, inputs, _ = self._make(b)
        keys, arrays = self._keys_and_arrays(inputs)
        return [InputSpec(keys[i] if keys else f"input{i}", tuple(a.shape[1:]),
                          "int64" if a.dtype.kind in "iu" else "float32") for i, a in enumerate(arrays)]

    def analytic_params(self) -> int:
        """The parameters of the model the factory returned (counted, tied weights once)."""
        model = self._model()
        if self._framework(model) == "torch":
            return int(sum(p.numel() for p in model.parameters()))
        return int(model.count_params())

    def _model(self) -> Any:
        b = self._made[0] if self._made is not None else self.batch_size_for()
        return self._make(b)[0]

    def supports_backend(self, backend: str) -> bool:
        return backend in ("torch", "tensorflow", "onnxruntime")

    def build_torch(self) -> Any:
        model = self._model()
        if self._framework(model) != "torch":
            raise SkipCell(f"{self.name!r} is a Keras model: run it with -b tensorflow")
        from harness.workloads._custom_torch import CustomModule

        keys, _ = self._keys_and_arrays(self._made[2])  # type: ignore[index]
        return CustomModule(model, keys)

    def build_tensorflow(self) -> Any:
        model = self._model()
        if self._framework(model) != "tensorflow":
            raise SkipCell(f"{self.name!r} is a torch model: run it with -b torch")
        return model

    def loss(self, backend: str, outputs: Any, labels: Any, inputs: Sequence[Any]) -> Any:
        loss_fn = self._made[3] if self._made is not None else None
        if loss_fn is not None:
            return loss_fn(outputs)
        if backend == "tensorflow":  # a Keras model: the mean of its (first) output
            import tensorflow as tf

            first = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
            return tf.reduce_mean(tf.cast(first, tf.float32))
        if backend != "torch":
            return None
        own = outputs.get("loss") if isinstance(outputs, Mapping) else getattr(outputs, "loss", None)
        if own is not None:
            return own
        first = _first_tensor(outputs)
        if first is None:
            raise TypeError(f"{self.factory}'s model returned {type(outputs).__name__} with no tensor to take the "
                            "mean of; return a loss_fn as the factory's third element")
        return first.float().mean()

    def model_info(self, backend: str) -> dict[str, Any]:
        path = _module_file(self.target, self.is_file)
        return {"provider": "custom", "factory": f"{self.target}:{self.factory}", "source": path,
                "source_sha256": file_sha256(path), "weights": "as the factory made them"}


def _first_tensor(outputs: Any) -> Any:
    if hasattr(outputs, "float") and hasattr(outputs, "mean"):
        return outputs
    values = outputs.values() if isinstance(outputs, Mapping) else (
        outputs.to_tuple() if hasattr(outputs, "to_tuple") else outputs if isinstance(outputs, (tuple, list)) else ())
    for v in values:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None


class CustomProvider(WorkloadProvider):
    """``custom:FILE.py:factory`` / ``custom:package.module:factory``."""

    scheme = "custom"
    description = "your own torch or Keras model from a factory(batch_size) -> (model, inputs[, loss_fn])"
    usage = USAGE

    def check(self, ref: str) -> None:
        parse_ref(ref)

    def workload_class(self, ref: str) -> type[Workload]:
        target, factory, is_file = parse_ref(ref)
        return type("Custom", (CustomWorkload,), {
            "name": f"custom:{ref}", "description": f"{factory} from {target}", "target": target,
            "factory": factory, "is_file": is_file, "__module__": __name__,
        })

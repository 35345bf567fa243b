"""Your own ONNX graph: ``-w onnx:path/model.onnx``, run as is by ``-b onnxruntime``.

* **Inputs** come from the graph (its inputs that are not initializers): names, element
  types and shapes. A symbolic or unknown *first* dimension is the batch (any
  ``--batch-size``); a static first dimension fixes the batch: the default batch size is
  that number, and a cell with another ``--batch-size`` is skipped with the reason. A
  dynamic dimension anywhere else is skipped with the reason naming the input and the
  dimension (the harness cannot guess a sequence length or an image size). A graph whose
  inputs all have a dynamic batch defaults to batch 1. Rank-0 inputs are scalars (no batch).
* **Values**: seeded random floats (standard normal) for float inputs; random integers in
  ``[0, 2)`` for integer inputs (booleans: False/True), because the graph does not say
  which values are valid (token ids, indices, masks) and 0 and 1 are valid for any
  vocabulary or index range of two or more. The cell records this under ``model.inputs``.
* **Parameters**: the graph's initializers, each weight once (the ONNX Runtime backend's
  ``initializer_params``, found through the plugin registry: built-in plugins do not
  import each other).
* **FLOPs**: no formula and no counter for a user's graph: unavailable, with the reason.
* **Backends**: ``-b onnxruntime`` only (it runs :meth:`OnnxWorkload.onnx_graph` directly,
  no export); ``-b torch`` is skipped with "an ONNX file runs on -b onnxruntime".
  Inference only.
* **Record**: ``model`` holds the path, the SHA-256 of the file (``source_sha256``, so
  history and compare never mix two versions of the file), the opset, the producer and
  the inputs as run.

The parent process (reading the suite) only checks that the file exists and reads the
first dimension of each input with a small protobuf scan (:func:`scan_input_dims`, no
``onnx`` import, weights skipped by seeking); the ``onnx`` package reads the file in
the cell's worker. A file that is not a valid ONNX model is a ``failed`` cell with the
reason, and the sweep goes on. Graphs with external data (weights in separate files,
models over 2 GB) are skipped with the reason.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Mapping, Sequence

from harness.api import InputSpec, SkipCell, Workload, WorkloadConfig, WorkloadProvider

USAGE = "onnx:path/to/model.onnx (run it with -b onnxruntime)"
#: the reason -b torch (and any backend but onnxruntime) gives for an ONNX file
TORCH_REASON = "an ONNX file runs on -b onnxruntime (there is no torch model to build from it)"
#: the batch size of a graph whose batch dimension is dynamic, unless --batch-size is given
DYNAMIC_BATCH_DEFAULT = 1
#: integer inputs draw from [0, INT_HIGH)
INT_HIGH = 2
INT_REASON = (f"random integers in [0, {INT_HIGH}): the graph does not say which values are valid (token ids, "
              "indices, masks); 0 and 1 are valid for any vocabulary or index range of two or more")
FLOAT_VALUES = "seeded standard-normal values"


# --------------------------------------------------------------------------- parent-side scan

_MAX_DEPTH_BYTES = 1 << 62


def _varint(f: BinaryIO) -> int | None:
    """One protobuf varint from ``f``; None at the end of the file."""
    shift = result = 0
    for _ in range(10):
        b = f.read(1)
        if not b:
            return None
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
    raise ValueError("varint too long")


def _fields(f: BinaryIO, end: int) -> Any:
    """(field number, wire type, value or (start, length)) of the message from the
    current offset to ``end``; length-delimited fields are yielded as their extent and
    skipped (seeked over) unless the caller reads them."""
    while f.tell() < end:
        tag = _varint(f)
        if tag is None:
            return
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            yield field, wire, _varint(f)
        elif wire == 1:
            f.seek(8, os.SEEK_CUR)
        elif wire == 5:
            f.seek(4, os.SEEK_CUR)
        elif wire == 2:
            n = _varint(f)
            if n is None or n > _MAX_DEPTH_BYTES:
                raise ValueError("bad length")
            start = f.tell()
            yield field, wire, (start, n)
            f.seek(start + n)
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _string(f: BinaryIO, extent: tuple[int, int]) -> str:
    start, n = extent
    f.seek(start)
    return f.read(min(n, 4096)).decode("utf-8", "replace")


def _dims(f: BinaryIO, extent: tuple[int, int]) -> list[int | str | None]:
    """The dimensions of a ValueInfoProto (type.tensor_type.shape.dim): int, name or None."""
    start, n = extent
    f.seek(start)
    for field, wire, val in _fields(f, start + n):
        if field == 2 and wire == 2:  # type: TypeProto
            for tf, tw, tv in _fields(f, val[0] + val[1]):
                if tf == 1 and tw == 2:  # tensor_type
                    for sf, sw, sv in _fields(f, tv[0] + tv[1]):
                        if sf == 2 and sw == 2:  # shape
                            dims: list[int | str | None] = []
                            for df, dw, dv in _fields(f, sv[0] + sv[1]):
                                if df == 1 and dw == 2:  # dim
                                    d: int | str | None = None
                                    for xf, xw, xv in _fields(f, dv[0] + dv[1]):
                                        if xf == 1 and xw == 0:
                                            d = int(xv)
                                        elif xf == 2 and xw == 2:
                                            d = _string(f, xv)
                                    dims.append(d)
                            return dims
    return []


def scan_input_dims(path: str) -> list[tuple[str, list[int | str | None]]] | None:
    """``(name, dims)`` of each graph input that is not an initializer, read from the
    file with a minimal protobuf scan (ModelProto.graph.input/initializer), seeking over
    everything else: no ``onnx`` import, cheap for the parent. None when the file cannot
    be scanned (the worker then reports what is wrong with it)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(0)
            graph = None
            for field, wire, val in _fields(f, size):
                if field == 7 and wire == 2:
                    graph = val
            if graph is None:
                return None
            inputs: list[tuple[int, int]] = []
            init_extents: list[tuple[int, int]] = []
            f.seek(graph[0])
            for field, wire, val in _fields(f, graph[0] + graph[1]):
                if field == 11 and wire == 2:
                    inputs.append(val)
                elif field == 5 and wire == 2:
                    init_extents.append(val)
            init_names: set[str] = set()
            for start, n in init_extents:
                f.seek(start)
                for field, wire, val in _fields(f, start + n):
                    if field == 8 and wire == 2:
                        init_names.add(_string(f, val))
                        break
            out = []
            for start, n in inputs:
                f.seek(start)
                name = ""
                for field, wire, val in _fields(f, start + n):
                    if field == 1 and wire == 2:
                        name = _string(f, val)
                        break
                if name in init_names:
                    continue
                out.append((name, _dims(f, (start, n))))
            return out
    except (OSError, ValueError, RecursionError):
        return None


@functools.lru_cache(maxsize=64)
def _default_batch(path: str, mtime_ns: int, size: int) -> tuple[int, str]:
    """(default batch size, why) of the graph at ``path`` (cached per file version)."""
    dims = scan_input_dims(path)
    if not dims:
        return DYNAMIC_BATCH_DEFAULT, "the file's inputs could not be read in the parent; batch 1"
    static = {d[0] for _, d in dims if d and isinstance(d[0], int) and d[0] > 0}
    if len(static) == 1:
        b = static.pop()
        return b, f"the graph's static batch dimension ({b})"
    return DYNAMIC_BATCH_DEFAULT, f"the graph's batch dimension is dynamic; batch {DYNAMIC_BATCH_DEFAULT} unless --batch-size"


def default_batch(path: str) -> tuple[int, str]:
    """The default batch size of the graph at ``path`` and why (see the module doc)."""
    try:
        st = os.stat(path)
    except OSError:
        return DYNAMIC_BATCH_DEFAULT, "file not readable"
    return _default_batch(path, st.st_mtime_ns, st.st_size)


def parse_ref(ref: str) -> str:
    """The resolved path of ``onnx:REF``; ``ValueError`` (one line, exit 2) when it is not a file."""
    if not ref:
        raise ValueError(f"bad ONNX model 'onnx:': give {USAGE}")
    p = Path(ref).expanduser()
    if not p.is_file():
        raise ValueError(f"ONNX model file not found: {p} (from {'onnx:' + ref!r}; give {USAGE})")
    return str(p.resolve())


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- the workload


@dataclass(frozen=True)
class OnnxConfig(WorkloadConfig):
    num_classes: int = 2  # labels are not used: inference only


@dataclass(frozen=True)
class GraphInput:
    """One input of the graph: name, numpy dtype name (None: unsupported ONNX type,
    ``elem_type`` names it) and dims (int, symbolic name, or None for unknown)."""

    name: str
    elem_type: str
    dtype: str | None
    dims: tuple[int | str | None, ...]


class OnnxWorkload(Workload):
    """A user's ONNX file (see the module doc)."""

    Config = OnnxConfig
    presets: ClassVar[Mapping[str, WorkloadConfig]] = {"default": OnnxConfig()}
    default_batch_size: ClassVar[Mapping[str, int]] = {"default": DYNAMIC_BATCH_DEFAULT}
    default_size: ClassVar[str | None] = "default"
    modes: ClassVar[tuple[str, ...]] = ("inference",)
    path: ClassVar[str]
    batch_note: ClassVar[str] = ""

    def __init__(self, size: str = "default", config: WorkloadConfig | None = None) -> None:
        super().__init__(size, config)
        self._header: dict[str, Any] | None = None
        self._bytes: bytes | None = None
        self._params: int | None = None

    # -- reading the file (worker only) ------------------------------------------------
    def onnx_graph(self) -> bytes:
        """The file's bytes: the graph the ONNX Runtime backend runs as is (no export)."""
        if self._bytes is None:
            self._bytes = Path(self.path).read_bytes()
        return self._bytes

    def header(self) -> dict[str, Any]:
        """Opset, producer, IR version and inputs of the graph, read with ``onnx``.
        ``ValueError`` naming the file when it is not a valid ONNX model (a failed cell)."""
        if self._header is not None:
            return self._header
        import onnx
        from onnx import helper

        try:
            m = onnx.load_from_string(self.onnx_graph())
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends: the file is bad
            raise ValueError(f"{self.path} is not a valid ONNX model: {type(e).__name__}: {str(e)[:300]}") from None
        if not m.HasField("graph") or not m.graph.node:
            raise ValueError(f"{self.path} is not a valid ONNX model: it holds no graph nodes")
        inits = {i.name for i in m.graph.initializer}
        external = [i.name for i in m.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
        inputs = []
        for vi in m.graph.input:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                inputs.append(GraphInput(vi.name, vi.type.WhichOneof("value") or "unknown", None, ()))
                continue
            try:
                elem = onnx.TensorProto.DataType.Name(tt.elem_type)
            except ValueError:
                elem = f"element type {tt.elem_type}"
            try:
                np_dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
                # plain numpy kinds only: bfloat16/float8/int4 (ml_dtypes, kind V), strings, complex are not generated
                dtype = str(np_dtype) if np_dtype.kind in "biuf" else None
            except Exception:  # noqa: BLE001 - an element type this onnx does not know
                dtype = None
            dims: list[int | str | None] = []
            for d in tt.shape.dim:
                if d.HasField("dim_value"):
                    dims.append(int(d.dim_value))
                elif d.HasField("dim_param"):
                    dims.append(d.dim_param)
                else:
                    dims.append(None)
            inputs.append(GraphInput(vi.name, elem, dtype, tuple(dims)))
        opset = next((int(o.version) for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
        self._header = {
            "opset": opset, "ir_version": int(m.ir_version),
            "producer": " ".join(x for x in (m.producer_name, m.producer_version) if x) or None,
            "inputs": inputs, "external_data": external,
        }
        return self._header

    def _inputs(self) -> list[GraphInput]:
        h = self.header()
        if h["external_data"]:
            raise SkipCell(f"{self.path} keeps {len(h['external_data'])} initializer(s) in external data files "
                           f"(e.g. {h['external_data'][0]!r}): not supported yet (the backend runs the graph "
                           "from memory); save the model with its weights inside the .onnx file")
        inputs = h["inputs"]
        if not inputs:
            raise SkipCell(f"{self.path}: the graph has no inputs to feed")
        for gi in inputs:
            if gi.dtype is None:
                raise SkipCell(f"{self.path}: input {gi.name!r} has element type {gi.elem_type}, for which the "
                               "harness makes no inputs (it makes float16/32/64, integer and bool inputs)")
            for axis, d in enumerate(gi.dims[1:], start=1):
                if not isinstance(d, int) or d < 1:
                    what = f"symbolic {d!r}" if isinstance(d, str) else "unknown"
                    raise SkipCell(f"{self.path}: input {gi.name!r} has a {what} dimension {axis} (shape "
                                   f"{_shape_text(gi.dims)}); only the first (batch) dimension may be dynamic: "
                                   "export the graph with that dimension fixed")
        return inputs

    def _check_batch(self, batch_size: int) -> None:
        for gi in self._inputs():
            if gi.dims and isinstance(gi.dims[0], int) and gi.dims[0] > 0 and gi.dims[0] != batch_size:
                raise SkipCell(f"{self.path}: input {gi.name!r} has a static batch dimension of {gi.dims[0]} "
                               f"(shape {_shape_text(gi.dims)}), so batch size {batch_size} cannot run; use "
                               f"--batch-size {gi.dims[0]} (the default) or export the graph with a dynamic batch axis")

    # -- Workload ----------------------------------------------------------------------
    def input_specs(self) -> Sequence[InputSpec]:
        """The graph's inputs without the batch dimension (SkipCell for what cannot run)."""
        return [InputSpec(gi.name, tuple(int(d) for d in gi.dims[1:]), str(gi.dtype),
                          high=INT_HIGH if _is_int(gi.dtype) else None)  # type: ignore[arg-type]
                for gi in self._inputs()]

    def make_inputs(self, batch_size: int, seed: int = 0) -> tuple[list[Any], Any]:
        """Seeded inputs of the graph's dtypes and shapes with ``batch_size`` as the first
        dimension (SkipCell when the graph's static batch differs); labels are unused zeros."""
        import numpy as np

        self._check_batch(batch_size)
        rng = np.random.default_rng(seed)
        arrays: list[Any] = []
        for gi in self._inputs():
            shape = (batch_size, *(int(d) for d in gi.dims[1:])) if gi.dims else ()  # type: ignore[arg-type]
            dtype = np.dtype(str(gi.dtype))
            if dtype.kind == "b":
                arrays.append(rng.integers(0, INT_HIGH, size=shape).astype(bool))
            elif dtype.kind in "iu":
                arrays.append(rng.integers(0, INT_HIGH, size=shape).astype(dtype))
            elif dtype.kind == "f":
                arrays.append(rng.standard_normal(size=shape).astype(dtype))
            else:
                raise SkipCell(f"{self.path}: input {gi.name!r} has dtype {dtype}, which the harness cannot generate")
        return [np.ascontiguousarray(a) for a in arrays], np.zeros((batch_size,), dtype=np.int64)

    def analytic_params(self) -> int:
        """The graph's initializers, each weight once (the ONNX Runtime backend's
        ``initializer_params``; quantization scales, zero points and scalars excluded)."""
        if self._params is None:
            from harness.core import registry

            self.header()  # a bad file fails here with a clear reason
            counter = getattr(registry.load("backend", "onnxruntime"), "graph_params", None)
            if not callable(counter):
                raise SkipCell("counting an ONNX graph's parameters needs the onnxruntime backend "
                               "(harness.backends.ort_backend), which is not registered")
            self._params = int(counter(self.onnx_graph())["params"])
        return self._params

    def supports_backend(self, backend: str) -> bool:
        """``onnxruntime``, and ``torch`` only so that the ONNX Runtime backend (which
        builds with torch for every other workload: ``Backend.builds_with``) is let
        through; :meth:`build_torch` skips a torch cell with :data:`TORCH_REASON`."""
        return backend in ("onnxruntime", "torch")

    def build_torch(self) -> Any:
        raise SkipCell(TORCH_REASON)

    def model_info(self, backend: str) -> dict[str, Any]:
        info: dict[str, Any] = {"provider": "onnx", "source": self.path, "weights": "as stored in the file"}
        try:
            info["source_sha256"] = file_sha256(self.path)
        except OSError as e:
            info["source_sha256"] = None
            info["source_sha256_reason"] = f"{type(e).__name__}: {e}"
        try:
            h = self.header()
        except ValueError as e:
            info["header_error"] = str(e)
            return info
        info.update({"opset": h["opset"], "ir_version": h["ir_version"], "producer": h["producer"],
                     "batch_default": self.default_batch_size.get("default"), "batch_default_why": self.batch_note})
        info["inputs"] = [{"name": gi.name, "elem_type": gi.elem_type, "dtype": gi.dtype,
                           "shape": [d if d is not None else "?" for d in gi.dims],
                           "values": INT_REASON if _is_int(gi.dtype) or gi.dtype == "bool" else FLOAT_VALUES}
                          for gi in h["inputs"]]
        return info


def _is_int(dtype: str | None) -> bool:
    return bool(dtype) and str(dtype).lstrip("u").startswith("int")


def _shape_text(dims: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


class OnnxProvider(WorkloadProvider):
    """``onnx:PATH``: a user's ONNX file, run as is by ``-b onnxruntime``."""

    scheme = "onnx"
    description = "your own ONNX file, run as is by -b onnxruntime (batch dimension from the graph)"
    usage = USAGE

    def check(self, ref: str) -> None:
        parse_ref(ref)

    def workload_class(self, ref: str) -> type[Workload]:
        path = parse_ref(ref)
        batch, why = default_batch(path)
        return type("Onnx", (OnnxWorkload,), {
            "name": f"onnx:{ref}", "description": f"ONNX graph {path}", "path": path,
            "default_batch_size": {"default": batch}, "batch_note": why, "__module__": __name__,
        })

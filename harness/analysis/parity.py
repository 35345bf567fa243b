"""Cross-framework agreement: the PyTorch model and its Keras twin, given the same
weights and inputs, must compute the same outputs.

How (``harness verify`` runs this):

1. **Torch side** (its own process, never imports TensorFlow): build the workload's
   torch model (``build_torch``), re-draw its weights so each one visibly moves the
   output (:func:`_informative_weights`: O(1) activations, peaked attention,
   non-trivial BatchNorm statistics; seeded), run one eval-mode forward pass on the
   workload's seeded inputs, and save ``state_dict`` + inputs + outputs to one
   ``.npz`` per preset.
2. **TensorFlow side** (its own process, never imports torch): build the Keras twin
   (``build_tensorflow``), copy the torch weights in
   (:func:`harness.core.frameworks.keras_utils.load_torch_state`), convert the inputs to the
   Keras layout (``Workload.backend_inputs("tensorflow", ...)``), and run the forward pass as the backend times it: a ``tf.function`` in graph
   mode (and, with ``xla=True``, also with ``jit_compile=True``).
3. Compare in float32: **relative error** ``= max|y_tf - y_torch| / max|y_torch|``
   over all logits of the batch (a max-norm relative error: scale-free, and one bad
   logit is enough to fail). Agreement means relative error <= ``tolerance``
   (default 1e-4) *and* equal trainable parameter counts (torch parameters, Keras
   trainable weights, and the workload's analytic count).

Both sides reach the frameworks only through the workload's API (``build``,
``backend_inputs``) and the shared helpers in :mod:`harness.core.frameworks`; nothing
here imports a backend or workload module.

The two frameworks run in separate processes so neither can disturb the other
(thread pools, oneDNN builds), and so this check never loads TensorFlow into a
PyTorch process or vice versa.

``python -m harness.analysis.parity torch|tensorflow JOB.json`` is the internal entry point of
the two sides; :func:`verify` drives them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

DEFAULT_TOLERANCE = 1e-4
DEFAULT_SIZES = ("tiny", "small")


@dataclass(frozen=True)
class Agreement:
    """The outcome for one workload and size preset."""

    workload: str
    size: str
    batch_size: int
    params_torch: int | None
    params_tensorflow: int | None
    params_analytic: int
    max_abs_diff: float | None  # max |y_tf - y_torch| over the batch's logits
    max_abs_ref: float | None  # max |y_torch|
    rel_error: float | None  # max_abs_diff / max_abs_ref (graph mode)
    rel_error_xla: float | None  # the same with jit_compile=True (None: not checked)
    tolerance: float
    error: str | None = None  # why it could not be checked

    @property
    def agrees(self) -> bool:
        """Outputs within tolerance (graph, and XLA when checked) and equal parameter counts."""
        if self.error is not None or self.rel_error is None:
            return False
        if self.rel_error_xla is not None and not self.rel_error_xla <= self.tolerance:
            return False
        return (
            self.rel_error <= self.tolerance
            and self.params_torch == self.params_tensorflow == self.params_analytic
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "agrees": self.agrees}


def relative_error(reference: Any, other: Any) -> tuple[float, float, float]:
    """(max|other - reference|, max|reference|, their ratio). The ratio is ``inf`` when
    the reference is all zeros but ``other`` is not, and 0 when both are zero."""
    import numpy as np

    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"output shapes differ: torch {a.shape} vs tensorflow {b.shape}")
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    ref = float(np.max(np.abs(a))) if a.size else 0.0
    if not np.all(np.isfinite(b)) or not np.all(np.isfinite(a)):
        return diff, ref, float("inf")
    if ref == 0.0:
        return diff, ref, 0.0 if diff == 0.0 else float("inf")
    return diff, ref, diff / ref


# ------------------------------------------------------------------------ torch side


def _informative_weights(model: Any, seed: int) -> None:
    """Re-draw the weights (seeded) so that every one of them visibly moves the output.

    With the workloads' own initialisation some mappings would hide: BERT's std-0.02
    weights make attention almost uniform (a wrong key projection changed the tiny
    transformer's logits by less than 1e-4 relative), and a fresh BatchNorm is nearly
    the identity in eval mode. So: Linear weights ~ N(0, 1/fan_in) and biases
    ~ N(0, 0.1^2) (O(1) activations, peaked attention), embeddings ~ N(0, 1), and
    LayerNorm/BatchNorm get non-trivial affine parameters and running statistics.
    Convolutions keep their (already O(1)) Kaiming initialisation.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, torch.nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
            elif isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
        # any other parameter (e.g. a custom table) gets a nudge so it is not all zeros
        for name, prm in model.named_parameters():
            if not prm.detach().abs().sum():
                prm.copy_(0.1 * torch.randn(prm.shape, generator=g))


def torch_side(job: dict[str, Any]) -> dict[str, Any]:
    """Dump weights, inputs and eval outputs of each (workload, size) to ``.npz`` files."""
    import numpy as np
    import torch

    from harness.core import registry

    torch.set_num_threads(max(1, int(job.get("threads") or torch.get_num_threads())))
    out: dict[str, Any] = {}
    for item in job["items"]:
        key = f"{item['workload']}/{item['size']}"
        try:
            w = registry.load("workload", item["workload"])(size=item["size"])
            model = w.build("torch").float()
            _informative_weights(model, job["seed"])
            model.eval()
            arrays, _ = w.make_inputs(item["batch_size"], seed=job["seed"])
            with torch.no_grad():
                y = model(*[torch.from_numpy(a) for a in arrays]).float().numpy()
            state = {f"state/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
            inputs = {f"input/{i}": a for i, a in enumerate(arrays)}
            path = Path(job["dir"]) / f"{item['workload']}-{item['size']}.npz"
            np.savez(path, output=y, **state, **inputs)
            out[key] = {"npz": str(path), "params": int(sum(p.numel() for p in model.parameters()))}
        except Exception as e:  # noqa: BLE001 - reported per preset
            out[key] = {"error": f"torch side: {type(e).__name__}: {e}"}
    return out


# ------------------------------------------------------------------- TensorFlow side


def tensorflow_side(job: dict[str, Any]) -> dict[str, Any]:
    """Load each ``.npz``, run the Keras twin with the torch weights, compare."""
    import numpy as np

    from harness.core import registry
    from harness.core.frameworks.keras_utils import import_tf, load_torch_state, trainable_params

    tf = import_tf()
    if job.get("threads"):
        tf.config.threading.set_intra_op_parallelism_threads(int(job["threads"]))

    out: dict[str, Any] = {}
    for item in job["items"]:
        key = f"{item['workload']}/{item['size']}"
        prev = job["torch"].get(key, {})
        if "error" in prev or "npz" not in prev:
            out[key] = {"error": prev.get("error", "torch side produced nothing")}
            continue
        try:
            w = registry.load("workload", item["workload"])(size=item["size"])
            with np.load(prev["npz"]) as z:
                state = {k[len("state/"):]: z[k] for k in z.files if k.startswith("state/")}
                n_inputs = sum(1 for k in z.files if k.startswith("input/"))
                arrays = [z[f"input/{i}"] for i in range(n_inputs)]
                ref = z["output"]
            with tf.device("/CPU:0"):
                model = w.build("tensorflow")
                load_torch_state(model, state)
                xs = [tf.constant(a) for a in w.backend_inputs("tensorflow", arrays)]
                x = xs[0] if len(xs) == 1 else xs
                graph = tf.function(lambda: model(x, training=False))
                y = graph().numpy()
                res: dict[str, Any] = {"params": trainable_params(model)}
                res["max_abs_diff"], res["max_abs_ref"], res["rel_error"] = relative_error(ref, y)
                if job.get("xla"):
                    xla = tf.function(lambda: model(x, training=False), jit_compile=True)
                    res["rel_error_xla"] = relative_error(ref, xla().numpy())[2]
            out[key] = res
        except Exception as e:  # noqa: BLE001 - reported per preset
            out[key] = {"error": f"tensorflow side: {type(e).__name__}: {e}"}
    return out


# -------------------------------------------------------------------------- driver


def _run_side(side: str, job: dict[str, Any], workdir: Path, timeout: float) -> dict[str, Any]:
    """Run one side in a fresh interpreter; its JSON answer, or an error record."""
    from harness.launch.runner import worker_env

    job_file = workdir / f"{side}-job.json"
    result_file = workdir / f"{side}-result.json"
    job_file.write_text(json.dumps(job))
    env = worker_env()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "harness.analysis.parity", side, str(job_file), str(result_file)],
            capture_output=True, text=True, timeout=timeout, env=env,
        )
    except subprocess.TimeoutExpired:
        return {"__error__": f"{side} side timed out after {timeout:g} s"}
    if proc.returncode != 0 or not result_file.exists():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        return {"__error__": f"{side} side exited with {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(result_file.read_text())


def verify(
    items: Sequence[tuple[str, str, int]],
    tolerance: float = DEFAULT_TOLERANCE,
    xla: bool = False,
    seed: int = 1,
    threads: int | None = None,
    timeout: float = 1800.0,
) -> list[Agreement]:
    """Check each ``(workload, size, batch_size)``: torch and TensorFlow in two processes."""
    from harness.core import registry

    items = list(items)
    with tempfile.TemporaryDirectory(prefix="dlh-verify-") as tmp:
        workdir = Path(tmp)
        base = {
            "items": [{"workload": w, "size": s, "batch_size": b} for w, s, b in items],
            "seed": seed, "dir": tmp, "xla": xla, "threads": threads,
        }
        torch_res = _run_side("torch", base, workdir, timeout)
        tf_res = (
            {"__error__": torch_res["__error__"]} if "__error__" in torch_res
            else _run_side("tensorflow", {**base, "torch": torch_res}, workdir, timeout)
        )
    out: list[Agreement] = []
    for w, s, b in items:
        key = f"{w}/{s}"
        t = torch_res.get(key, {})
        f = tf_res.get(key, {})
        error = torch_res.get("__error__") or tf_res.get("__error__") or t.get("error") or f.get("error")
        out.append(Agreement(
            workload=w, size=s, batch_size=b,
            params_torch=t.get("params"), params_tensorflow=f.get("params"),
            params_analytic=int(registry.load("workload", w)(size=s).analytic_params()),
            max_abs_diff=f.get("max_abs_diff"), max_abs_ref=f.get("max_abs_ref"),
            rel_error=f.get("rel_error"), rel_error_xla=f.get("rel_error_xla"),
            tolerance=tolerance, error=error,
        ))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or args[0] not in ("torch", "tensorflow"):
        print("usage: python -m harness.analysis.parity torch|tensorflow JOB.json RESULT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(args[1]).read_text())
    result = torch_side(job) if args[0] == "torch" else tensorflow_side(job)
    from harness.core.fsutil import atomic_write_text

    atomic_write_text(args[2], json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

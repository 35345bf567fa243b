"""Framework helpers shared by several plugins and the core analyses.

Each module imports its framework lazily or at its top (then it is imported only inside
functions that already need that framework), so importing this package imports no
framework:

* :mod:`harness.core.frameworks.torch_precision`: float32 math flags of PyTorch (strict
  IEEE fp32 or TF32) and where TF32 exists (no torch import at module level);
* :mod:`harness.core.frameworks.torch_utils`: model statistics, batched prediction and
  training thread policy for ``torch.nn.Module`` models (imports torch);
* :mod:`harness.core.frameworks.keras_utils`: TensorFlow import with quiet logs, Keras
  parameter counts and model statistics, batched prediction, torch -> Keras weight
  transfer and graph FLOP counting (imports Keras / numpy).

Plugins (backends, variants, workloads) import these; the core never imports a plugin.
"""

"""dl-harness: deep-learning benchmarking and hardware profiling with honest numbers.

Everything is one import namespace, ``harness``: the core layers (``harness.core``,
``harness.store``, ``harness.launch``, ``harness.analysis``, ``harness.commands``) and the
built-in plugins and reports (``harness.workloads``, ``harness.backends``,
``harness.reports``, ``harness.variants``, ``harness.collectors``). The repository keeps
``workloads/``, ``backends/`` and ``reports/`` as top-level folders; the wheel installs
them as ``harness/workloads`` etc. (setuptools ``package-dir`` in pyproject.toml), and in a
source checkout the small finder below maps the three names onto those folders.
"""

__version__ = "0.1.0"

_MAPPED = ("workloads", "backends", "reports")


def _map_source_layout() -> None:
    import importlib.abc
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if os.path.isdir(os.path.join(here, _MAPPED[0])) or not all(
            os.path.isfile(os.path.join(root, name, "__init__.py")) for name in _MAPPED):
        return  # an installed wheel (real harness/workloads) or not this repository's layout

    class _SourceLayoutFinder(importlib.abc.MetaPathFinder):
        """Finds ``harness.workloads`` / ``harness.backends`` / ``harness.reports`` in the
        repository's top-level folders (nothing else)."""

        def find_spec(self, fullname, path=None, target=None):  # noqa: D102
            pkg, _, name = fullname.partition(".")
            if pkg != __name__ or name not in _MAPPED:
                return None
            folder = os.path.join(root, name)
            return importlib.util.spec_from_file_location(
                fullname, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])

    # first on the meta path: the plugins come from the same checkout as this harness
    # package, even when an editable install of another checkout is on the same Python
    if not any(type(f).__name__ == "_SourceLayoutFinder" for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceLayoutFinder())


_map_source_layout()

"""dl-harness: deep-learning benchmarking and hardware profiling with honest numbers."""

__version__ = "0.1.0"

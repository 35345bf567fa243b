"""Built-in collectors (host memory); more register through the
``dl_harness.collectors`` entry-point group."""

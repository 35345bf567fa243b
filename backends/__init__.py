"""Framework adapters (``Backend`` subclasses), registered through the
``dl_harness.backends`` entry-point group. Each imports its framework lazily."""

"""Hardware adapters: the lowest boundary (vendor libraries, sysfs, /proc).

Each adapter has a factory returning the real thing or a null object with the reason,
so tests fake exactly this layer and everything above runs for real."""

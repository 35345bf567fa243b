"""analysis layer of dl-harness (see README, Architecture)."""

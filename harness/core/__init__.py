"""core layer of dl-harness (see README, Architecture)."""

"""launch layer of dl-harness (see README, Architecture)."""

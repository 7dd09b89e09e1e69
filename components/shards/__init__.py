"""Scale-out of prepare and detect: shard specs, the part files shards write, and their merges."""

"""seqwrite."""

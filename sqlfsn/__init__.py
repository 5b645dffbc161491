"""sqlfsn."""

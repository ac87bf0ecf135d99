"""router/providers."""

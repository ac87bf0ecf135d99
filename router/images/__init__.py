"""router/images."""

"""aperture."""

"""Voice activity detection providers."""

"""Speech recognition providers."""

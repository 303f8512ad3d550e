"""Vector stores for retrieval and nearest-example understanding."""

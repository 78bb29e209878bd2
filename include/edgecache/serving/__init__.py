"""The serving side: what an edge runs live and what loads it (the shared rules so far)."""

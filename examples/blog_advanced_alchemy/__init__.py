"""The blog service written with advanced-alchemy's documented FastAPI patterns: the other side
of issue 14's comparison with ``examples/blog`` (asyncdal), same HTTP contract."""

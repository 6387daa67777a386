"""The blog service written with asyncdal: the tutorial's service, and one side of issue 14's
comparison with advanced-alchemy (``examples/blog_advanced_alchemy``, same HTTP contract)."""

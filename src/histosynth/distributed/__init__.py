"""Distributed work: generation on Ray (``ray_generate``) and its shards and manifest merge (``shards``).

Ray is optional and imported lazily, so importing this package never needs it.
"""

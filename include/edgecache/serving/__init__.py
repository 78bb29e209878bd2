"""The serving side: what an edge runs live and what loads it.

``warm_cache``  the task ``warm_cache``: the predictions into Redis;
``delivery``    the real-time path (decision, edge service, replay driver);
``admission``   the admission rule and the next-episode map, shared with the evaluation;
``keys``        the Redis key scheme; ``redis_conn``: opening Redis from a URL.
"""

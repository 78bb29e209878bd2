"""How good the caches were: the next day's requests replayed against the predictions.

``evaluate``  the Spark job of the task ``evaluate``;
``report``    the replay and the hit-ratio report;
``policies``  the classic cache policies and the deployed caches, as simulators.

It imports the shared rules (admission, next-episode map) from ``edgecache.serving``; serving
and the pipeline never import it.
"""

"""The synthetic viewers: a workload model and the job that writes a day of its logs.

``workload``       builds a workload (catalog, viewers, edges) and draws a day with the ``catalog`` model;
``snm``            the shot noise model, the other way to pick titles;
``base``           what both models share, from sessions to log lines;
``generate_logs``  the Spark job of the task ``generate_logs``.
"""

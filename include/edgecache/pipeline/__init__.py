"""The nightly Spark pipeline, from the logs to the predictions.

Stages (one module each, named as the DAG's task): ``ingest_logs``, ``features`` (task
``spark_features``) and ``predict`` (task ``spark_predict``). Each has ``build_parser()``,
``run(spark, args) -> report`` and ``main(argv)``: ``spark_jobs/<task>.py`` calls ``main``
under spark-submit, the ``edgecache`` CLI calls it in process, and either way the job
writes a JSON report under ``reports/date=D/`` (``job`` holds what they share).

What they use: ``catalog`` (the catalog contract), ``validate`` (the log contract's checks), ``candidates``, ``scorer``,
``demand``, ``gate`` (the nightly model gate) and ``ranking``. Spark set-up: ``spark``,
``java``, ``packaging`` (the package as a zip for executors) and ``filesystems``.
"""

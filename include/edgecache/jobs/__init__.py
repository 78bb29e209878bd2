"""One module per Spark job: ``build_parser()``, ``run(spark, args) -> report``, ``main(argv)``.

``spark_jobs/<job>.py`` calls ``main`` under spark-submit; the ``edgecache`` CLI calls it
in process. Either way the job writes a JSON report under ``reports/date=D/``.
"""

"""Running the system on one machine and watching it: only the CLI and the DAG import this.

``localrun``       ``make run``: one DAG run under ``airflow dags test``, then a summary;
``stack``          ``make up`` / ``make down``: Airflow, the edge services, Prometheus;
``redis_server``   the embedded redis-server used when no Redis URL is set;
``push_metrics``   the task ``push_metrics``: the run's batch metrics to a Pushgateway or a file;
``exporter``       serves that file to Prometheus; ``statsd_bridge``: Airflow's StatsD metrics;
``dashboards``     writes the Grafana dashboards.
"""

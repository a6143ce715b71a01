"""The one Spark session builder of the stage: the analyzer, the threshold job, the evaluations
and the tests all start Spark through `spark_session`, so they run with the same settings.

- UTC everywhere (session time zone and the JVM's), so event time never depends on the machine.
- 2 shuffle partitions: the local default is 2 cores (`local[2]`); Spark's default of 200 makes
  small batches many times slower. The streaming aggregation's state is partitioned by this
  number, which is why it is one constant: a checkpoint keeps the value it was created with.
- A larger generated-code cache: the analyzer runs both queries and the rules in one session,
  and the default (100 classes) evicts classes that every micro-batch needs again.
"""
from __future__ import annotations

from pyspark.sql import SparkSession

from finale.common import spark_security

SHUFFLE_PARTITIONS = 2


def spark_session(app_name: str, master: str = "local[2]", *, jars: list[str] = (),
                  security: dict[str, str] | None = None, ui: bool = False,
                  log_level: str = "WARN") -> SparkSession:
    """A session for `app_name` on `master` with the stage's settings (module docstring).

    `jars`: extra jars (Spark's Kafka connector, finale.tools.kafka_jars.ensure_connector);
    `security`: spark_security.properties_from_args, handed to the JVM in a file, never on a
    command line; `ui`: the Spark UI (the analyzer's, for an operator; off in batch jobs and tests).
    """
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.shuffle.partitions", str(SHUFFLE_PARTITIONS))
        .config("spark.sql.codegen.cache.maxEntries", "1000")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.ui.enabled", "true" if ui else "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    spark = spark_security.get_or_create(builder, security)
    spark.sparkContext.setLogLevel(log_level)
    return spark

"""The one Spark session builder of the stage: the analyzer, the threshold job, the evaluations
and the tests all start Spark through `spark_session`, so they run with the same settings.

- UTC everywhere (session time zone and the JVM's), so event time never depends on the machine.
- 2 shuffle partitions: the local default is 2 cores (`local[2]`); Spark's default of 200 makes
  small batches many times slower. The streaming aggregation's state is partitioned by this
  number, which is why it is one constant: a checkpoint keeps the value it was created with.
- A larger generated-code cache: the analyzer runs both queries and the rules in one session,
  and the default (100 classes) evicts classes that every micro-batch needs again.
- On a local master (`local`, `local[N]`), everything Spark listens on (the UI, the driver's RPC
  and block-manager ports) is bound to 127.0.0.1: nothing of it is for another machine, and
  without `--secure` nothing there authenticates. SPARK_LOCAL_IP, when set, is the user's choice
  and wins. On a cluster the driver must be reachable by its executors: Spark's defaults apply,
  and the UI's exposure is the deployment's decision (docs/deployment.md).
"""
from __future__ import annotations

import os
import re

from pyspark.sql import SparkSession

from finale.common import spark_security

SHUFFLE_PARTITIONS = 2
LOOPBACK = "127.0.0.1"
LOCAL_MASTER = re.compile(r"^local(\[[^\]]*\])?$")


def is_local(master: str) -> bool:
    """True for Spark's in-process masters: local, local[2], local[*], local[2,3]."""
    return LOCAL_MASTER.match(master.strip()) is not None


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
    if is_local(master):
        # The UI binds to SPARK_LOCAL_IP (all interfaces without it), read when the JVM starts;
        # the driver's ports to spark.driver.bindAddress.
        os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
        address = os.environ["SPARK_LOCAL_IP"]
        builder = (builder.config("spark.driver.host", address)
                   .config("spark.driver.bindAddress", address))
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    spark = spark_security.get_or_create(builder, security)
    spark.sparkContext.setLogLevel(log_level)
    return spark

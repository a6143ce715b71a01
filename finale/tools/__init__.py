"""Programs around the pipeline: the local Kafka broker and its jars, a local Spark cluster, the
demo, the evaluations, the alert viewer and the compose check."""

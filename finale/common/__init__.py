"""What every program of the stage shares: command-line helpers, paths, the topics, the alert
record, the Spark session and its security settings."""

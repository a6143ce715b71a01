"""Chaussettes.io stage 3: real-time access-log analytics with Spark Structured Streaming and Kafka.

common/     what every program shares: command line, paths, topics, the alert record, Spark
analyzer/   the analysis: parser, window counts, rules, thresholds, sinks, the streaming queries
            and the threshold batch job
generator/  the log generator: the shop's traffic, incidents, replay of a real log, producers
tools/      around the pipeline: the local broker, a Spark cluster, the demo, the evaluations,
            the alert viewer, the compose check

The commands are the thin scripts beside this file (python finale/NAME.py) and `make` targets.
"""

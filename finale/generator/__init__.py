"""The log generator: the shop's seeded traffic, injected incidents and their truth file, replay
of a real access log, and its outputs (Kafka, a file, a TCP server)."""

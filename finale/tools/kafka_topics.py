"""The project's topics on any Kafka cluster (the local broker or another): create the missing
ones, list them. The topics themselves are declared in finale/common/topics.py.

    python finale/local_kafka.py topics [--create] --bootstrap-servers HOST:PORT
"""
from __future__ import annotations

from finale.common.topics import TOPICS


def admin_client(bootstrap_servers: str, timeout_s: float = 10.0):
    """A kafka-python admin client of the cluster; the caller closes it."""
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="local-kafka",
                            request_timeout_ms=int(timeout_s * 1000))


def ensure_topics(bootstrap_servers: str, topics: dict = TOPICS,
                  align_configs: bool = False) -> list[str]:
    """Create the project's topics that do not exist yet (idempotent); names created.

    align_configs: also set the declared configs on the topics that exist (incrementally: other
    settings of the topic are kept), so a broker created by an older version gets, say, the
    alerts' retention. The local broker does it at each start; on another cluster, topics that
    exist are left as they are."""
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import TopicAlreadyExistsError

    admin = admin_client(bootstrap_servers)
    try:
        existing = set(admin.list_topics())
        present = [topic for name, topic in topics.items() if name in existing and topic.configs]
        if align_configs and present:
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic.name,
                                                configs=dict(topic.configs))
                                 for topic in present])
        missing = {name: {"num_partitions": topic.partitions, "replication_factor": 1,
                          "configs": topic.configs}
                   for name, topic in topics.items() if name not in existing}
        if missing:
            try:
                admin.create_topics(missing, wait_for_metadata=True)
            except TopicAlreadyExistsError:  # created meanwhile by someone else: fine
                pass
        return sorted(missing)
    finally:
        admin.close()


def check_topics(bootstrap_servers: str, topics: list[str], timeout_s: float = 15.0,
                 client_id: str = "chaussettes-check") -> str | None:
    """None if the broker answers and the topics exist, else one line saying what is wrong (the
    analyzer's and the dashboard's check before they start)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","),
                                 client_id=client_id, request_timeout_ms=int(timeout_s * 1000),
                                 bootstrap_timeout_ms=int(timeout_s * 1000))
        try:
            existing = set(admin.list_topics())
        finally:
            admin.close()
    except (KafkaError, OSError, ValueError) as error:
        return (f"no Kafka broker answers at {bootstrap_servers} ({type(error).__name__}): "
                "start one with `python finale/local_kafka.py start` or set --bootstrap-servers")
    missing = [topic for topic in topics if topic not in existing]
    if missing:
        return (f"topic(s) {', '.join(missing)} do not exist on {bootstrap_servers}: "
                "`python finale/local_kafka.py start` creates the project's topics")
    return None


def describe_topics(bootstrap_servers: str) -> dict[str, int]:
    """{topic: partition count} of the cluster, internal topics left out."""
    admin = admin_client(bootstrap_servers)
    try:
        return {topic["name"]: len(topic["partitions"])
                for topic in admin.describe_topics(admin.list_topics())
                if not topic["name"].startswith("__")}
    finally:
        admin.close()

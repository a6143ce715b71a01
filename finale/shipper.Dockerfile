# The shipper's image for compose's `site` profile: Debian's rsyslog with its Kafka output, the
# project's config (conf/rsyslog/http-logs.conf, the same file `make ship` runs), a non-root user.
# It follows ${SHIP_ACCESS_LOG} (a host log folder mounted read-only) into ${SHIP_TOPIC}; its file
# position and disk queue are in /var/lib/shipper (a volume).
FROM debian:bookworm-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends rsyslog rsyslog-kafka \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shipper \
 && useradd --system --uid 10001 --gid shipper --no-create-home shipper \
 && install -d -o shipper -g shipper -m 0700 /var/lib/shipper

COPY conf/rsyslog/http-logs.conf /etc/chaussettes/http-logs.conf

USER shipper
ENV SHIP_STATE_DIR=/var/lib/shipper \
    SHIP_TOPIC=http-logs
# In the foreground, its own config and pid file: no system socket, no syslog of the container.
# A log it cannot read is one line (the usual causes: ACCESS_LOG_DIR unset, the file's group).
CMD ["bash", "-c", "test -r \"$SHIP_ACCESS_LOG\" || { echo \"shipper: error: cannot read $SHIP_ACCESS_LOG: set ACCESS_LOG_DIR (its folder), ACCESS_LOG_FILE (its name) and ACCESS_LOG_GID (its group)\" >&2; exit 1; }; exec rsyslogd -n -f /etc/chaussettes/http-logs.conf -i /var/lib/shipper/rsyslogd.pid"]

# Test stand-in for prom/prometheus:v2.53.2, built from Debian 12's
# prometheus (2.42) on a local base image (no registry is reachable where
# the tests run). Same contract as the official image as
# docker-compose.multi.yml uses it: the prometheus binary as the entrypoint
# (the compose file gives --config.file and --storage.tsdb.path), data in
# /prometheus owned by nobody, wget for the healthcheck, port 9090.
ARG BASE_IMAGE=localhost/discordbot-base:bookworm-slim
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o nobody -g nogroup -m 0755 /prometheus
WORKDIR /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

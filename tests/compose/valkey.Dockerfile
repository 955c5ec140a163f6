# Test stand-in for valkey/valkey:7.2, built from Debian 12's redis-server on
# a local base image (no registry is reachable where the tests run). Same
# contract as the official image as docker-compose.multi.yml uses it:
# valkey-server and valkey-cli on PATH, data in /data (the working
# directory), not root, protected mode off when the command gives no config
# file (the official entrypoint does the same), port 6379.
ARG BASE_IMAGE=localhost/discordbot-base:bookworm-slim
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/redis-server /usr/local/bin/valkey-server \
 && ln -s /usr/bin/redis-cli /usr/local/bin/valkey-cli \
 && install -d -o redis -g redis -m 0750 /data
COPY valkey-entrypoint.sh /usr/local/bin/valkey-entrypoint
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/valkey-entrypoint"]
CMD ["valkey-server"]

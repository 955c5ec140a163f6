# Test stand-in for postgres:15, built from Debian 12's postgresql-15 on a
# local base image (no registry is reachable where the tests run). Same
# contract as the official image as docker-compose.multi.yml and
# deploy-multi.sh use it: POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB
# create the user and database at the first start, data in
# /var/lib/postgresql/data (PGDATA), listens on 5432 on every address with
# password (scram) auth over TCP and trust on the local socket, pg_isready,
# pg_dump and pg_restore on PATH, the server runs as the user postgres.
ARG BASE_IMAGE=localhost/discordbot-base:bookworm-slim
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
CMD ["postgres"]

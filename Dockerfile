# syntax=docker/dockerfile:1
#
# leadq container image: one binary, `leadq`, whose first argument picks the role
# (api, worker, migrate, tenant ...). See docker-compose.yml for a full local stack.
#
#   docker build -t leadq:local .
#   docker run --rm -e DATABASE_URL=... -e REDIS_URL=... leadq:local migrate

# --- build ------------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# No incremental data in a one-shot build. Any sqlx compile-time query data must come from the
# committed .sqlx/ folder: there is no database at build time.
ENV CARGO_INCREMENTAL=0 \
    SQLX_OFFLINE=true
COPY . .
# Cache the registry and the target folder between builds (BuildKit); copy the binary out of
# the cache mount so the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin leadq \
 && install -D -m 0755 target/release/leadq /out/leadq

# --- runtime ----------------------------------------------------------------------------------
# Pinned by digest, so a rebuild gets the bytes that were reviewed, not whatever the tag points
# at today. The digest is the multi-arch index of debian:bookworm-slim that BuildKit resolved in
# a public build log; this machine cannot reach a registry to re-check it. To move to a newer
# base (monthly, or for a Debian security update), look the digest up and replace it:
#   docker buildx imagetools inspect debian:bookworm-slim --format '{{json .Manifest.Digest}}'
FROM debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251 AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# Unprivileged user with a fixed uid/gid (matches runAsUser in orchestrators).
RUN groupadd --system --gid 10001 leadq \
 && useradd --system --uid 10001 --gid leadq --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin leadq
COPY --from=builder /out/leadq /usr/local/bin/leadq
# Non-root; compose (and deploy manifests) add a read-only root filesystem and drop every
# capability.
USER 10001:10001
# Inside a container, listen on all interfaces; logs as JSON lines on stderr.
ENV LEADQ_API_ADDR=0.0.0.0:8080 \
    LEADQ_WORKER_ADDR=0.0.0.0:9091 \
    LEADQ_LOG_FORMAT=json
EXPOSE 8080 9091
ENTRYPOINT ["/usr/local/bin/leadq"]
CMD ["api"]

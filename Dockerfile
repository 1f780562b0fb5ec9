# syntax=docker/dockerfile:1
# driftwatch's image: the binary the README builds (`cargo build --release`),
# run as a non-root user, healthy while /healthz answers.
#
#   docker build -t driftwatch .
#   docker run -p 9797:9797 -e DRIFTWATCH_API_TOKEN=… driftwatch
#
# The dependencies are built in a layer of their own from the manifests
# alone (stub sources), so a change to driftwatch's code rebuilds only
# driftwatch's crates.

FROM rust:1.95-slim-bookworm AS build
# librdkafka and OpenSSL are built from source by their crates
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ make perl pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY ingest/Cargo.toml ingest/
COPY detectors/Cargo.toml detectors/
COPY sql/Cargo.toml sql/
COPY triggers/Cargo.toml triggers/
COPY engine/Cargo.toml engine/
RUN for c in ingest detectors sql triggers engine; do mkdir -p $c/src $c/benches && touch $c/src/lib.rs; done \
 && for b in detectors/benches/windows detectors/benches/sketches detectors/benches/label_join \
             ingest/benches/decode sql/benches/rules; do echo 'fn main() {}' > $b.rs; done \
 && mkdir -p src && echo 'fn main() {}' > src/main.rs \
 && cargo build --release --locked \
 && rm -rf src */src target/release/.fingerprint/driftwatch*
COPY . .
# the debug information the release profile keeps is for profiling, not for the image
RUN touch src/main.rs */src/lib.rs && cargo build --release --locked \
 && strip --strip-debug target/release/driftwatch

FROM debian:bookworm-slim
# the data directory is made here, the service user's: a new volume takes
# its owner from the image (made by VOLUME alone it would be root's)
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/driftwatch --create-home driftwatch \
 && mkdir -p /var/lib/driftwatch/data && chown driftwatch: /var/lib/driftwatch/data
COPY --from=build /src/target/release/driftwatch /usr/local/bin/driftwatch
COPY rules /etc/driftwatch/rules
USER driftwatch
WORKDIR /var/lib/driftwatch
# listen beyond loopback: the service then insists on DRIFTWATCH_API_TOKEN
ENV DRIFTWATCH__DATA_DIR=/var/lib/driftwatch/data \
    DRIFTWATCH__SQL__RULES_DIR=/etc/driftwatch/rules \
    DRIFTWATCH__API__LISTEN=0.0.0.0:9797
EXPOSE 9797
VOLUME /var/lib/driftwatch/data
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9797/healthz || exit 1
ENTRYPOINT ["driftwatch"]
CMD ["run"]

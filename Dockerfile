# Multi-stage build: compile in the Rust image, run from a small Debian image as a non-root user.
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY bench bench
RUN cargo build --release --locked --bin cdc-bridge

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/cdc-bridge cdc \
    && install -d -o cdc -g cdc /var/lib/cdc-bridge
COPY --from=build /src/target/release/cdc-bridge /usr/local/bin/cdc-bridge
COPY connectors /etc/cdc-bridge/connectors
COPY config /etc/cdc-bridge/config
USER cdc
WORKDIR /var/lib/cdc-bridge
ENTRYPOINT ["cdc-bridge"]
CMD ["run", "--config", "/etc/cdc-bridge/connectors/generator-stdout.toml"]

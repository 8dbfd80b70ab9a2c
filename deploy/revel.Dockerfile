# The Revel reference service and its traffic generator, for deploy/compose.yaml.
# Build context: the repository root.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p revel --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/revel /src/target/release/revel-traffic /usr/local/bin/
# Spans go to OTLP (OTEL_EXPORTER_OTLP_ENDPOINT) in the stack; without an endpoint, development
# writes them to this file.
WORKDIR /var/lib/revel
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/revel"]

# scoregate: multi-stage build, small non-root runtime image.
# The image is the product alone: `--no-default-features` leaves out the emulator, `demo` and
# `bench` (the test rig, and rcgen with them); `serve`, `check-config`, `keygen`, `openapi` and
# `healthcheck` are all there.
# Build:  docker build -t scoregate .
# Run:    docker run -p 8080:8080 -v /path/to/config:/etc/scoregate:ro -v scoregate-data:/var/lib/scoregate \
#           -e CONTOSO_SECRET=... scoregate
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
COPY config ./config
COPY openapi ./openapi
# The history schema is embedded in the binary at build time (`sqlx::migrate!`).
COPY migrations ./migrations
# `--build-arg CARGO_ARGS=` builds the test rig too (`emulate`, `bench`): deploy/compose.yaml's
# emulator service does.
ARG CARGO_ARGS=--no-default-features
RUN cargo build --release --locked $CARGO_ARGS

FROM debian:bookworm-slim
# ca-certificates: rustls reads the system roots to verify Entra ID and Defender.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin scoregate \
    && mkdir -p /var/lib/scoregate && chown 10001 /var/lib/scoregate
COPY --from=build /src/target/release/scoregate /usr/local/bin/scoregate
COPY config/scoregate.example.toml /etc/scoregate/scoregate.example.toml
USER 10001
# The configuration is mounted at /etc/scoregate/scoregate.toml (see docs/operating/docker.md).
# The binary brings its own allocator (jemalloc, src/main.rs): no malloc tuning here.
ENV SCOREGATE_CONFIG=/etc/scoregate/scoregate.toml \
    SCOREGATE__SERVER__BIND=0.0.0.0:8080 \
    SCOREGATE__HISTORY__URL=sqlite:///var/lib/scoregate/scoregate.db
# The history database (SQLite), writable by the non-root user, apart from the read-only
# configuration: mount a volume here (`-v scoregate-data:/var/lib/scoregate`).
VOLUME /var/lib/scoregate
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["scoregate", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["scoregate"]
CMD ["serve"]

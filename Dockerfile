# Build stage: the Rust toolchain. protoc comes from the protoc-bin-vendored crate, so no
# system packages are needed.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs rustfmt.toml ./
COPY proto proto
COPY migrations migrations
COPY src src
RUN cargo build --release --locked --bin tenantd

# Runtime stage: no compiler, no shell tools beyond Debian's base; runs as a non-root user.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home tenantd
COPY --from=build /src/target/release/tenantd /usr/local/bin/tenantd
USER 10001:10001
EXPOSE 50051
# The image has no grpc-health-probe and no curl: `tenantd health` speaks grpc.health.v1 itself
# (readiness, service ""), exiting 0 only when SERVING; it gives up after about 3 s per step.
# `|| exit 1` because Docker reserves exit status 2, which `tenantd health` uses for "unreachable".
HEALTHCHECK --interval=10s --timeout=8s --start-period=20s --retries=3 \
  CMD /usr/local/bin/tenantd health --server http://127.0.0.1:50051 || exit 1
ENTRYPOINT ["/usr/local/bin/tenantd"]
CMD ["serve"]

# Build stage: the Rust toolchain, pinned to the version CI uses. protoc comes from the
# protoc-bin-vendored crate, so no system packages are needed.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: it is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs && echo 'fn main() {}' > build.rs \
    && cargo build --release --locked --bin tenantd \
    && rm -rf src build.rs target/release/.fingerprint/tenantd-* target/release/build/tenantd-* \
       target/release/deps/tenantd-* target/release/deps/libtenantd-*
COPY build.rs rustfmt.toml ./
COPY proto proto
COPY third_party third_party
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

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
ENTRYPOINT ["/usr/local/bin/tenantd"]
CMD ["serve"]

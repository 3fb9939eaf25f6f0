# syntax=docker/dockerfile:1.7
# phalanx-scheduler: build with the workspace's toolchain, run on distroless as
# a non-root user. From the repository root:
#
#   docker build -f deploy/images/scheduler.Dockerfile -t phalanx/phalanx-scheduler:0.1.0 .
#
# The client uses rustls (no OpenSSL); the binary needs only glibc and
# libgcc, which distroless/cc provides.

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build outputs between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p phalanx-scheduler --bin phalanx-scheduler \
    && install -D -m 0755 target/release/phalanx-scheduler /out/phalanx-scheduler

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/phalanx-scheduler /usr/local/bin/phalanx-scheduler
# The chart runs it as 65532 too (distroless's "nonroot"), with a read-only root.
USER 65532:65532
EXPOSE 10251
ENTRYPOINT ["/usr/local/bin/phalanx-scheduler"]
CMD ["run", "--config", "/etc/phalanx/config.yaml"]

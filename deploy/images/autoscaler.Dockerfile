# syntax=docker/dockerfile:1.7
# phalanx-autoscaler: same recipe as the scheduler. From the repository root:
#
#   docker build -f deploy/images/autoscaler.Dockerfile -t phalanx/phalanx-autoscaler:0.1.0 .

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p phalanx-autoscaler --bin phalanx-autoscaler \
    && install -D -m 0755 target/release/phalanx-autoscaler /out/phalanx-autoscaler

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/phalanx-autoscaler /usr/local/bin/phalanx-autoscaler
USER 65532:65532
EXPOSE 10252
ENTRYPOINT ["/usr/local/bin/phalanx-autoscaler"]
CMD ["run", "--config", "/etc/phalanx/config.yaml"]

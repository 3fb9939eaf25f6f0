# phalanx-device-plugin: the DaemonSet on GPU nodes.
#
#   docker build -f deploy/images/device-plugin.Dockerfile -t phalanx-device-plugin .
#
# The build stage compiles only this package. The .proto files are compiled by
# `protox` inside build.rs, so no protoc is needed in the image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p phalanx-device-plugin \
 && cp target/release/phalanx-device-plugin /phalanx-device-plugin

# Runtime: glibc (NVML is loaded with dlopen from the driver the NVIDIA
# container toolkit mounts in; a static musl binary could not load it) and
# nothing else. No CUDA libraries are needed: only libnvidia-ml.so.1, which
# comes from the host's driver.
FROM debian:bookworm-slim
COPY --from=build /phalanx-device-plugin /usr/local/bin/phalanx-device-plugin
# Tell the NVIDIA container runtime to mount the driver's utility libraries
# (libnvidia-ml) and all GPUs, as NVIDIA's own device plugin image does.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=utility
# Root, on purpose: kubelet's device-plugin directory
# (/var/lib/kubelet/device-plugins) and PodResources socket are owned by root
# with mode 0750/0700 on every distribution, and the plugin must create its own
# sockets there and connect to kubelet.sock. Nothing else needs root; the chart
# drops all capabilities and runs privileged: false (see deploy/device-plugin/README.md).
USER 0:0
ENTRYPOINT ["/usr/local/bin/phalanx-device-plugin"]
CMD ["run"]

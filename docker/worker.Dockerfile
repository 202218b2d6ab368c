# syntax=docker/dockerfile:1
# tributary-worker with libtorch 2.11.0 (CUDA 13.0), for Contributor pods and external peers.
# Build from the repository root (the builder downloads ~4.6 GB of torch and CUDA wheels):
#
#   docker build -f docker/worker.Dockerfile -t ghcr.io/tributary-dev/tributary-worker:0.1.0 .
#
# How the binary finds libtorch: worker/build.rs bakes the absolute path of the venv's
# site-packages/torch/lib into the binary's rpath, and libtorch_cuda.so finds cuBLAS, cuDNN, NCCL,
# ... through its own rpath, $ORIGIN/../../nvidia/<package>/lib. So the runtime stage gets
# torch/lib and nvidia/ at exactly their builder paths, and needs no LD_LIBRARY_PATH.

# torch-sys 0.24 (tch 0.24) accepts exactly this torch release.
ARG TORCH_VERSION=2.11.0
# The CUDA libraries come from the torch wheels; the base image brings the driver hooks
# (NVIDIA_VISIBLE_DEVICES, NVIDIA_REQUIRE_CUDA>=13.0) for the NVIDIA container runtime.
ARG CUDA_BASE=nvidia/cuda:13.0.0-base-ubuntu24.04

FROM rust:1.95-bookworm AS builder
ARG TORCH_VERSION
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
# torch-sys runs `python` (the venv's, as VIRTUAL_ENV is set) to locate torch.
ENV VIRTUAL_ENV=/opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/venv \
    && pip install --disable-pip-version-check "torch==${TORCH_VERSION}"

WORKDIR /src
COPY . .
# Wins over the LIBTORCH=.libtorch that .cargo/config.toml sets for checkouts (scripts/setup-torch.sh).
ENV LIBTORCH_USE_PYTORCH=1
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tributary-worker --bin tributary-worker \
    && install -D -m 0755 target/release/tributary-worker /out/tributary-worker

# /stage mirrors / : torch/lib and nvidia/ under their builder paths, next to the binary.
RUN set -eu; \
    torch_lib="$(python -c 'import os, torch; print(os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "lib")))')"; \
    site="$(dirname "$(dirname "$torch_lib")")"; \
    readelf -d /out/tributary-worker | grep -F "path: [$torch_lib]" \
        || { echo "tributary-worker's rpath is not $torch_lib (stale target cache? docker builder prune)"; exit 1; }; \
    mkdir -p "/stage$site/torch" /stage/usr/local/bin; \
    cp -a "$torch_lib" "/stage$site/torch/lib"; \
    cp -a "$site/nvidia" "/stage$site/nvidia"; \
    rm -rf "/stage$site"/nvidia/*/include; \
    find "/stage$site/nvidia" -name '*.a' -delete; \
    cp -a /out/tributary-worker /stage/usr/local/bin/

FROM ${CUDA_BASE}
COPY --from=builder /stage/ /
# `--help` loads libtorch and every CUDA library it links (no GPU needed): a library missing
# from the image fails the build here rather than in a pod.
RUN groupadd --gid 65532 tributary \
    && useradd --uid 65532 --gid 65532 --create-home --shell /usr/sbin/nologin tributary \
    && tributary-worker --help >/dev/null
# Numeric, so that runAsNonRoot can check it.
USER 65532:65532
WORKDIR /home/tributary
# Pods name the binary in `command` (found on PATH, which includes /usr/local/bin).
ENTRYPOINT ["/usr/local/bin/tributary-worker"]

# syntax=docker/dockerfile:1
# tributary-operator: the Kubernetes controller, and the coordinator of every TrainingRun (the
# operator starts coordinator pods from this same image). Build from the repository root:
#
#   docker build -f docker/operator.Dockerfile -t ghcr.io/tributary-dev/tributary-operator:0.1.0 .
#
# The operator needs no libtorch: this image has glibc and the binary, nothing else.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# rust-toolchain.toml pins 1.95.0 with rustfmt and clippy; rustup adds whatever the image lacks.
# Registry and target are BuildKit caches, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tributary-operator --bin tributary-operator \
    && install -D -m 0755 target/release/tributary-operator /out/tributary-operator

# glibc, libgcc and CA certificates; no shell. Debian 12 matches the builder's glibc.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/tributary-operator /usr/local/bin/tributary-operator
# Numeric, so that runAsNonRoot can check it.
USER 65532:65532
# Pods name the binary in `command` (found on PATH, which includes /usr/local/bin).
ENTRYPOINT ["/usr/local/bin/tributary-operator"]

# Images for a real cluster, two ways:
#
# - From source, where public registries are reachable:
#     docker build --target node -t meridian-node .
#     docker build --target operator -t meridian-operator .
# - From binaries built on the host (`cargo build --release --bins`), with no
#   pull at all when RUNTIME_BASE is an image the engine already has
#   (tests/kind does this with a Debian rootfs made here). The context is a
#   directory holding meridian-node, meridian, meridian-data-center and
#   meridian-operator:
#     docker build --target node-prebuilt --build-arg RUNTIME_BASE=IMAGE DIR
#   The prebuilt stages come first, so the classic builder, which builds every
#   stage up to its target, never reaches the Rust image.
#
# Both run as a non-root user (65532) on a read-only root filesystem, as the
# chart expects. The runtime base must have glibc (Debian 12's, or newer).
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUNTIME_BASE} AS node-prebuilt
COPY meridian-node meridian meridian-data-center /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meridian-node"]

FROM ${RUNTIME_BASE} AS operator-prebuilt
COPY meridian-operator /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meridian-operator"]

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM ${RUNTIME_BASE} AS node
COPY --from=build /src/target/release/meridian-node /usr/local/bin/meridian-node
COPY --from=build /src/target/release/meridian /usr/local/bin/meridian
COPY --from=build /src/target/release/meridian-data-center /usr/local/bin/meridian-data-center
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meridian-node"]

FROM ${RUNTIME_BASE} AS operator
COPY --from=build /src/target/release/meridian-operator /usr/local/bin/meridian-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meridian-operator"]

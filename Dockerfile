# Images for a real cluster: `docker build --target node -t meridian-node .`
# and `docker build --target operator -t meridian-operator .`. Both run as
# a non-root user on a read-only root filesystem, as the chart expects.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM gcr.io/distroless/cc-debian12:nonroot AS node
COPY --from=build /src/target/release/meridian-node /usr/local/bin/meridian-node
COPY --from=build /src/target/release/meridian /usr/local/bin/meridian
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meridian-node"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /src/target/release/meridian-operator /usr/local/bin/meridian-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meridian-operator"]

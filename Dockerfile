# syntax=docker/dockerfile:1
# One image with both programs: backtrack-service (the control plane; also `serve` on its own,
# the embedded setup) and backtrack-storage-node. The Helm chart runs each with its command.
#
#   docker build -t backtrack .
#   docker run --rm -p 8080:8080 -v backtrack:/var/lib/backtrack backtrack

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY service service
COPY storage-node storage-node
COPY migrations migrations
# The caches keep the registry and the compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p backtrack-service -p backtrack-storage-node \
    && install -D -m 0755 -t /out \
       target/release/backtrack-service target/release/backtrack-storage-node \
    && mkdir /data

# glibc and libgcc, CA certificates, no shell, no package manager: the same Debian release as
# the build stage.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/ /usr/local/bin/
# The data directory (a volume: mounted over on Kubernetes), owned by the runtime user.
COPY --from=build --chown=10001:10001 --chmod=0750 /data /var/lib/backtrack
# Not root; the chart's securityContext uses the same uid.
USER 10001:10001
WORKDIR /var/lib/backtrack
VOLUME /var/lib/backtrack
EXPOSE 8080
ENTRYPOINT ["backtrack-service"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/backtrack"]

# The runstream binary, for every role (serve, ingest, project, query, rebuild).
#   docker build -t runstream .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin runstream

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/runstream /usr/local/bin/runstream
ENV RUNSTREAM_LISTEN=0.0.0.0:8080 \
    RUNSTREAM_DATA=/data
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["runstream"]
CMD ["serve"]

# The `fulcrum` binary in a slim image. Build: docker build -t fulcrum .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p api --bin fulcrum

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/fulcrum /usr/local/bin/fulcrum
ENV FULCRUM_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["fulcrum"]
CMD ["serve"]

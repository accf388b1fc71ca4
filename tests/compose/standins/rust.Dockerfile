# Stand-in for rust:1-bookworm: the Debian base with a C linker, this machine's Rust toolchain
# (in the build context as rust/) and its crate cache (registry/), so cargo runs offline from the
# crates that Cargo.lock names (the host fetched them first).
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY rust /usr/local/rust
COPY registry /usr/local/cargo/registry
ENV CARGO_HOME=/usr/local/cargo \
    CARGO_NET_OFFLINE=true \
    PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN cargo --version && rustc --version

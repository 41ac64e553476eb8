# Build and run an InferLlama node as a non-root user. The image needs only the runtime libraries.
#   docker build -t inferllama . && docker run -p 8080:8080 -v inferllama-data:/data inferllama
# Secrets go in files, never in flags or -e values (docker inspect shows those), e.g. an admin key:
#   docker run ... -v /etc/inferllama/admin_key:/run/secrets/admin_key:ro \
#     -e INFERLLAMA_ADMIN_KEY_FILE=/run/secrets/admin_key inferllama
# (likewise INFERLLAMA_UPSTREAM_TOKEN_FILE and INFERLLAMA_RATELIMIT_BACKEND_PASSWORD_FILE; compose and swarm
# secrets are mounted under /run/secrets/ the same way).
FROM debian:12 AS build
WORKDIR /src
COPY . .
# The runtime packages are derived from the binary just built, not listed by hand:
# scripts/runtime-packages.sh maps each library it links to the Debian package that ships it. The
# runtime stage installs that list, plus ca-certificates (the node opens the CA bundle; it does not link
# it), so the image gets whatever the binary links, nothing it does not need, and cannot drift from it.
# tests/integration/test_runtime_image.py rebuilds this stage's files in a root folder without Docker
# and runs the node there.
RUN scripts/install-deps.sh && scripts/build.sh -DINFERLLAMA_TESTS=OFF \
 && scripts/runtime-packages.sh build/inferllama > build/runtime-packages

FROM debian:12-slim
# /data is 0700 and owned by the USER below: it holds users' keys, and the node warns at each start about
# a data directory open to others (a new named volume takes this mode and owner).
COPY --from=build /src/build/runtime-packages /tmp/runtime-packages
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive xargs -a /tmp/runtime-packages \
      apt-get install -y -qq --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin inferllama \
 && install -d -m 0700 -o 10001 -g 10001 /data
COPY --from=build /src/build/inferllama /usr/local/bin/inferllama
COPY --from=build /src/config/inferllama.toml /etc/inferllama/inferllama.toml
USER 10001:10001
VOLUME ["/data"]
# HTTP (Hub API, web seed, HTTP tracker), BitTorrent peer wire, UDP tracker.
EXPOSE 8080 6881 6969/udp
ENV INFERLLAMA_DATA_DIR=/data INFERLLAMA_LISTEN=0.0.0.0:8080
# The root file system can be mounted read-only (docker run --read-only): the node writes only /data.
ENTRYPOINT ["/usr/local/bin/inferllama", "serve"]

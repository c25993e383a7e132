# spareline container image.
#
# Build:
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t spareline .
#
# Run (the config and the embedded store live in volumes; the modems are
# passed in as devices, and the process joins the group that owns them):
#   docker run -d --name spareline \
#     -p 2775:2775 -p 127.0.0.1:9090:9090 \
#     -v /etc/spareline:/etc/spareline:ro \
#     -v spareline-data:/var/lib/spareline \
#     --device /dev/ttyUSB0 --device /dev/ttyUSB1 --group-add dialout \
#     spareline
#
# The image's dialout group is gid 20, as on Debian and Ubuntu hosts; when the
# device belongs to another gid on the host, pass that number instead:
#   --group-add "$(stat -c %g /dev/ttyUSB0)"
#
# In the container the config must say
#   http:  { listen: "0.0.0.0:9090" }     (the default 127.0.0.1:9090 is unreachable from outside)
#   store: { path: /var/lib/spareline }   (or a store.redis URL)
# See docs/operations.md. `docker kill -s HUP spareline` reloads the config;
# `docker stop -t 45 spareline` drains: --drain (30s), then up to 2s to unbind
# the platforms and 2s the carriers, and the store's close (deploy/spareline.service:
# TimeoutStopSec=45s; raise both with --drain).

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# A static binary: no libc, so it runs on distroless/static.
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/spareline ./cmd/spareline \
 && mkdir -p /out/var/lib/spareline /out/etc/spareline
# distroless's group file plus dialout (gid 20, as on Debian and Ubuntu hosts),
# with the nonroot user in it, so that `--group-add dialout` resolves and a
# passed-in /dev/ttyUSB* owned by root:dialout is usable.
RUN printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' \
      'dialout:x:20:nonroot' 'nonroot:x:65532:' > /out/group

FROM gcr.io/distroless/static-debian12:nonroot
# nonroot is uid/gid 65532. The volume directories are created owned by it
# so that a fresh named volume is writable.
COPY --from=build /out/spareline /usr/local/bin/spareline
COPY --from=build /out/group /etc/group
COPY --from=build --chown=65532:65532 /out/var/lib/spareline /var/lib/spareline
COPY --from=build --chown=65532:65532 /out/etc/spareline /etc/spareline
USER 65532
WORKDIR /var/lib/spareline
VOLUME ["/etc/spareline", "/var/lib/spareline"]
# SMPP for the platform; HTTP for /metrics, /healthz, /readyz, /status.
EXPOSE 2775 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/spareline", "run", "--config", "/etc/spareline/spareline.yaml"]

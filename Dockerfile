# syntax=docker/dockerfile:1
#
# The standalone webhook image (deploy/standalone):
#   docker build -t ghcr.io/<you>/mutator:<tag> .
# Multi-platform: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the builder runs natively and cross-compiles; there is no cgo).

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS TARGETARCH
WORKDIR /src
# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# Static (CGO_ENABLED=0, so it runs on distroless/static), reproducible
# (-trimpath) and small (-s -w strip the symbol table and DWARF).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/mutator ./cmd/mutator

# distroless/static: CA certificates, tzdata and /etc/passwd with the
# nonroot user, no shell or package manager.
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/mutator /mutator
# nonroot (65532); numeric so that runAsNonRoot can verify it without
# resolving a name.
USER 65532:65532
LABEL org.opencontainers.image.licenses=Apache-2.0 org.opencontainers.image.source=https://github.com/mutator-dev/mutator
# 8443 serves reviews and probes over HTTPS (PORT), 9095 metrics (METRICS_PORT).
EXPOSE 8443 9095
ENTRYPOINT ["/mutator", "serve"]

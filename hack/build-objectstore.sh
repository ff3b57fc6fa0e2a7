#!/usr/bin/env bash
# Builds the tests' S3-compatible object store, Versity Gateway (Apache-2.0, POSIX backend), from its
# Go module and caches it outside the repo, keyed by version, like hack/build-binaries.sh does for the
# control plane. FTJ_OBJECTSTORE_BIN (an existing versitygw binary) is used as it is and not built.
# Prints the path of the binary.
set -euo pipefail

VERSITYGW_VERSION="${VERSITYGW_VERSION:-v1.8.0}"
CACHE="${FTJ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/finetune-operator}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

if [[ -n "${FTJ_OBJECTSTORE_BIN:-}" && -x "$FTJ_OBJECTSTORE_BIN" ]]; then echo "$FTJ_OBJECTSTORE_BIN"; exit 0; fi

dir="$CACHE/versitygw-$VERSITYGW_VERSION"
if [[ ! -x "$dir/bin/versitygw" ]]; then
  echo "build-objectstore: building versitygw $VERSITYGW_VERSION (cold: minutes on 2 cores)" >&2
  mkdir -p "$dir/src" "$dir/bin"
  cd "$dir/src"
  printf 'module ftjscratch/versitygw\n\ngo 1.25\n\nrequire github.com/versity/versitygw %s\n' \
    "$VERSITYGW_VERSION" > go.mod
  go build -trimpath -ldflags "-s -w -X main.Version=$VERSITYGW_VERSION" \
    -o "$dir/bin/versitygw.tmp" github.com/versity/versitygw/cmd/versitygw
  mv "$dir/bin/versitygw.tmp" "$dir/bin/versitygw"
fi
mkdir -p "$CACHE/bin"
ln -sf "$dir/bin/versitygw" "$CACHE/bin/versitygw"
echo "$dir/bin/versitygw"

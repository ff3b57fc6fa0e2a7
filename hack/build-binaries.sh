#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules and caches them outside the repo,
# keyed by version. Honours envtest's TEST_ASSET_<NAME> and KUBEBUILDER_ASSETS: a binary found
# there is used as it is and not built. Prints the bin directory holding all of them.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
CACHE="${FTJ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/finetune-operator}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { echo "build-binaries: $*" >&2; }

# asset NAME ENVNAME -> prints a user-provided path or nothing
user_asset() {
  local name=$1 envname=$2 var="TEST_ASSET_$2"
  if [[ -n "${!var:-}" && -x "${!var}" ]]; then echo "${!var}"; return; fi
  if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/$name" ]]; then echo "$KUBEBUILDER_ASSETS/$name"; fi
}

# build_k8s CMD... : builds those of k8s.io/kubernetes/cmd/CMD that are not built yet, from one
# scratch module (so the real node's kubelet and kube-proxy match the control plane exactly).
build_k8s() {
  local dir="$CACHE/kubernetes-$K8S_VERSION" minor patch major cmd missing=()
  for cmd in "$@"; do [[ -x "$dir/bin/$cmd" ]] || missing+=("$cmd"); done
  [[ ${#missing[@]} -eq 0 ]] && { echo "$dir/bin"; return; }
  log "building kubernetes $K8S_VERSION: ${missing[*]} (cold: tens of minutes on 2 cores)"
  mkdir -p "$dir/src" "$dir/bin"
  local v=${K8S_VERSION#v}; major=${v%%.*}; minor=$(cut -d. -f2 <<<"$v"); patch=$(cut -d. -f3 <<<"$v")
  local staging="v0.$minor.$patch"
  cd "$dir/src"
  printf 'module ftjscratch/kubernetes\n\ngo 1.25\n' > go.mod
  # Staging modules are required at v0.0.0 by k8s.io/kubernetes; replace each with its published
  # release. The list comes from the .mod file the proxy serves, not from a hard-coded list.
  local modfile
  modfile=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$modfile" ]] || { log "could not download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$modfile" | awk '{print $1}' | sort -u > staging.txt
  [[ -s staging.txt ]] || { log "no staging replaces found in $modfile"; exit 1; }
  echo "require k8s.io/kubernetes $K8S_VERSION" >> go.mod
  while read -r m; do echo "replace $m => $m $staging" >> go.mod; done < staging.txt
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  # One `go build` for all of them: one pass over the shared packages, and the links overlap the compiles.
  local out="$dir/bin/.tmp" pkgs=()
  for cmd in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  rm -rf "$out" && mkdir -p "$out"
  log "go build ${missing[*]}"
  go build -trimpath -ldflags "$ld" -o "$out/" "${pkgs[@]}"
  for cmd in "${missing[@]}"; do mv "$out/$cmd" "$dir/bin/$cmd"; done
  rmdir "$out"
  echo "$dir/bin"
}

build_etcd() {
  local dir="$CACHE/etcd-$ETCD_VERSION"
  [[ -x "$dir/bin/etcd" ]] && { echo "$dir/bin"; return; }
  log "building etcd $ETCD_VERSION"
  mkdir -p "$dir/src" "$dir/bin"
  cd "$dir/src"
  # etcd's own go.mod has replace lines, so it is built as a dependency of a scratch module.
  printf 'module ftjscratch/etcd\n\ngo 1.25\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
  printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > main.go
  go build -trimpath -ldflags "-s -w" -o "$dir/bin/etcd.tmp" .
  mv "$dir/bin/etcd.tmp" "$dir/bin/etcd"
  echo "$dir/bin"
}

build_kwok() {
  local dir="$CACHE/kwok-$KWOK_VERSION"
  [[ -x "$dir/bin/kwok" && -x "$dir/bin/kwokctl" ]] && { echo "$dir/bin"; return; }
  log "building kwok $KWOK_VERSION"
  mkdir -p "$dir/src" "$dir/bin"
  cd "$dir/src"
  printf 'module ftjscratch/kwok\n\ngo 1.25\n\nrequire sigs.k8s.io/kwok %s\n' "$KWOK_VERSION" > go.mod
  local ld="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
  rm -rf "$dir/bin/.tmp" && mkdir -p "$dir/bin/.tmp"
  go build -trimpath -ldflags "$ld" -o "$dir/bin/.tmp/" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
  mv "$dir/bin/.tmp/kwok" "$dir/bin/.tmp/kwokctl" "$dir/bin/" && rmdir "$dir/bin/.tmp"
  echo "$dir/bin"
}

main() {
  local out="$CACHE/bin"
  mkdir -p "$out"
  local k8s etcd kwok pair name p wanted=() found=()
  link() { ln -sf "$1" "$out/$2"; }
  # The control plane, and the real node's (hack/realnode.py) kubelet and kube-proxy of the same version,
  # all in one build.
  for pair in kube-apiserver:KUBE_APISERVER kube-controller-manager:KUBE_CONTROLLER_MANAGER \
      kube-scheduler:KUBE_SCHEDULER kubelet:KUBELET kube-proxy:KUBE_PROXY; do
    name=${pair%%:*}; p=$(user_asset "$name" "${pair##*:}")
    if [[ -n "$p" ]]; then found+=("$p:$name"); else wanted+=("$name"); fi
  done
  if [[ ${#wanted[@]} -gt 0 ]]; then
    k8s=$(build_k8s "${wanted[@]}")
    for name in "${wanted[@]}"; do link "$k8s/$name" "$name"; done
  fi
  for pair in "${found[@]}"; do link "${pair%:*}" "${pair##*:}"; done
  p=$(user_asset etcd ETCD); if [[ -z "$p" ]]; then p="$(build_etcd)/etcd"; fi; link "$p" etcd
  p=$(user_asset kwok KWOK); if [[ -z "$p" ]]; then kwok=$(build_kwok); p="$kwok/kwok"; fi; link "$p" kwok
  p=$(user_asset kwokctl KWOKCTL); if [[ -z "$p" ]]; then kwok=${kwok:-$(build_kwok)}; p="$kwok/kwokctl"; fi; link "$p" kwokctl
  echo "$out"
}

main "$@"

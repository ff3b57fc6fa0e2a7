#!/usr/bin/env bash
# Debian packages the tests and the demo need, installed only when missing (idempotent).
#   hack/system-packages.sh            everything (monitoring + the real node + image builds)
#   hack/system-packages.sh monitoring only Prometheus/promtool
# `apt-get update` runs once, and only when something is missing. Needs root or passwordless sudo.
set -euo pipefail

want=()
need() { # need <command | /path | pkg:name> <package>
  case $1 in
    /*) [[ -e $1 ]] || want+=("$2") ;;
    pkg:*) dpkg-query -W -f='${Status}' "${1#pkg:}" 2>/dev/null | grep -q "ok installed" || want+=("$2") ;;
    *) command -v "$1" >/dev/null 2>&1 || want+=("$2") ;;
  esac
}

need prometheus prometheus
if [[ ${1:-all} == all ]]; then
  need containerd containerd
  need runc runc
  need buildah buildah
  need debootstrap debootstrap
  need /usr/lib/cni/bridge containernetworking-plugins
  need iptables iptables
  need conntrack conntrack
  need gcc gcc
  need pkg:libc6-dev libc6-dev  # the static pause binary
fi
[[ ${#want[@]} -eq 0 ]] && exit 0

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install: ${want[*]}" >&2; exit 1; }
  sudo=(sudo -n)
fi
echo "installing Debian packages: ${want[*]}" >&2
apt_opts=(-qq -o DPkg::Lock::Timeout=600)
"${sudo[@]}" apt-get "${apt_opts[@]}" update
# --no-install-recommends: no system services or tools the harness does not use.
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get "${apt_opts[@]}" install -y --no-install-recommends "${want[@]}" >/dev/null

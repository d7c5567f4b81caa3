#!/usr/bin/env bash
# Install what the service needs on Debian (Python 3.11+): system packages, the hub's proxy,
# and a virtual environment in .venv with this project. EXTRAS=test adds the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

apt_packages=(${APT_PACKAGES:-})
command -v git >/dev/null || apt_packages+=(git)
command -v bwrap >/dev/null || apt_packages+=(bubblewrap)
command -v npm >/dev/null || apt_packages+=(npm)
if [ ${#apt_packages[@]} -gt 0 ]; then
  missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
if ! command -v configurable-http-proxy >/dev/null; then
  echo "==> npm install -g configurable-http-proxy"
  $SUDO npm install -g --silent configurable-http-proxy@5
fi
# MyST books run the service's mystmd (a Python dependency) on node 20 or later; Debian 12's
# nodejs is 18: then install one from nodejs.org or NodeSource (c.BookRunner.node points at it)
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "warning: MyST books need Node.js 20 or later (found: $(node --version 2>/dev/null || echo none))" >&2
fi
# builds never run as root: confined steps run as this unprivileged user (c.NeuroLibre.build_user)
BUILD_USER=${NEUROLIBRE_BUILD_USER:-neurolibre-build}
if [ "$(id -u)" = 0 ] && ! id "$BUILD_USER" >/dev/null 2>&1; then
  echo "==> creating the unprivileged build user $BUILD_USER"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$BUILD_USER"
fi
command -v setpriv >/dev/null && command -v prlimit >/dev/null || {
  echo "setpriv and prlimit (util-linux) are needed to confine builds" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check uv
extras=${EXTRAS:+[$EXTRAS]}
echo "==> installing neurolibre-service${extras} into .venv"
.venv/bin/uv pip install -q --python .venv/bin/python -e ".${extras}"

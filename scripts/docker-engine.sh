#!/usr/bin/env bash
# A Docker engine for the docker builder, started the way these machines allow (DESIGN.md):
# Debian's docker.io, no bridge network and no iptables rules, every piece of state under one
# directory. Containers and builds on it must use host networking
# (c.DockerBuilder.build_network = "host"). Idempotent: "start" on a running engine only
# prints its address. Run as root. Used by operators and by the tests.
#
#   scripts/docker-engine.sh start  [DIR]   start it (if needed); prints DOCKER_HOST=unix://...
#   scripts/docker-engine.sh stop   [DIR]   stop it (its containers stop with it)
#   scripts/docker-engine.sh status [DIR]   exit 0 if it answers, and print its address
#
# DIR: $NEUROLIBRE_DOCKER_DIR, or /var/lib/neurolibre-docker. Inside it: data/ (images,
# --data-root), run/ (--exec-root), docker.sock, docker.pid and dockerd.log.
set -euo pipefail

cmd=${1:-start}
dir=${2:-${NEUROLIBRE_DOCKER_DIR:-/var/lib/neurolibre-docker}}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)
sock="$dir/docker.sock"
host="unix://$sock"
pidfile="$dir/docker.pid"
logfile="$dir/dockerd.log"

# unix socket paths are limited to 108 bytes; containerd's lives deeper, under run/
if [ $((${#dir} + 40)) -gt 107 ]; then
  echo "docker-engine: $dir is too long a path for the engine's sockets; choose a shorter one" >&2
  exit 2
fi

answers() {
  docker -H "$host" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

running_pid() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$(command -v dockerd)")" ]; then
    echo "$pid"
  fi
}

case "$cmd" in
start)
  if answers; then
    echo "DOCKER_HOST=$host"
    exit 0
  fi
  if ! command -v dockerd >/dev/null; then
    echo "docker-engine: dockerd is not installed (apt-get install docker.io)" >&2
    exit 1
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "docker-engine: dockerd must be started as root" >&2
    exit 1
  fi
  if [ -n "$(running_pid)" ]; then
    echo "docker-engine: dockerd $(running_pid) runs but does not answer on $sock; stop it first" >&2
    exit 1
  fi
  mkdir -p "$dir/data" "$dir/run"
  rm -f "$sock"
  # setsid: the engine outlives the shell that started it; stop it with "stop"
  setsid dockerd \
    --host "$host" \
    --data-root "$dir/data" \
    --exec-root "$dir/run" \
    --pidfile "$pidfile" \
    --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --userland-proxy=false \
    </dev/null >>"$logfile" 2>&1 &
  for _ in $(seq 1 120); do
    if answers; then
      echo "DOCKER_HOST=$host"
      exit 0
    fi
    if ! kill -0 $! 2>/dev/null; then
      break
    fi
    sleep 0.5
  done
  echo "docker-engine: dockerd did not start; the end of $logfile:" >&2
  tail -n 20 "$logfile" >&2
  exit 1
  ;;
stop)
  pid=$(running_pid)
  if [ -n "$pid" ]; then
    kill -TERM "$pid"
    # dockerd gives its containers 15 s to stop, then stops its containerd
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.3
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "docker-engine: dockerd $pid did not stop in 30 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
    fi
  fi
  # what dockerd leaves mounted in its exec root (its network namespace handle)
  awk -v d="$dir/run/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  ;;
status)
  if answers; then
    echo "DOCKER_HOST=$host"
    exit 0
  fi
  exit 1
  ;;
*)
  echo "usage: $0 start|stop|status [DIR]" >&2
  exit 2
  ;;
esac

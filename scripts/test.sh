#!/usr/bin/env bash
# Command 2: install everything the tests need (bubblewrap, PostgreSQL, Chromium, Docker
# (docker.io; debootstrap makes the tests' base image; docker-registry to push to),
# configurable-http-proxy, the Python test tools) and run the whole suite.
# Under CI=true nothing may be skipped: a missing part fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PACKAGES="postgresql chromium fonts-liberation docker.io debootstrap docker-registry apache2-utils" EXTRAS=test bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "==> ruff"
ruff format --check --quiet . && ruff check --quiet .
echo "==> pytest"
status=0
pytest -p no:cacheprovider -ra "$@" || status=$?
if [ "$status" = 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"

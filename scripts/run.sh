#!/usr/bin/env bash
# Command 1: install everything and run JupyterHub with the NeuroLibre service on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
DATA=${NEUROLIBRE_DATA:-$PWD/data}
# the sample preprint, as a Git repository the service may build by path
sample="$DATA/examples/sample-preprint"
if [ ! -d "$sample/.git" ]; then
  mkdir -p "$DATA/examples"
  cp -r example/sample-preprint "$sample"
  git -C "$sample" init -q -b main
  git -C "$sample" add -A
  git -C "$sample" -c user.name=NeuroLibre -c user.email=sample@neurolibre.invalid \
    commit -q -m "Sample preprint"
fi
cat <<MSG

  NeuroLibre is starting. Submit the sample preprint on the test form:
    http://127.0.0.1:${NEUROLIBRE_HUB_PORT:-8000}/services/neurolibre/preprints/new
  Log in as "admin" (or any other name) with the password "${NEUROLIBRE_PASSWORD:-neurolibre}".
  Repository: $sample   (ref: main)
  Emails to authors arrive in $DATA/mail/new/ (the local mail sink).
  Stop with Ctrl-C.

MSG
exec jupyterhub -f jupyterhub_config.py

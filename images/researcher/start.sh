#!/bin/sh
# The researcher server's start: the notebooks into ~/notebooks (only those not there yet: a
# researcher's edits are never overwritten), then jupyterhub-singleuser with the hub's arguments.
set -u
src=${MBC_NOTEBOOKS:-/opt/mbc/notebooks}
dest=${HOME:-/home/jovyan}/notebooks
if [ -d "$src" ] && mkdir -p "$dest" 2>/dev/null; then
  for nb in "$src"/*.ipynb; do
    [ -f "$nb" ] || continue
    [ -e "$dest/${nb##*/}" ] || cp "$nb" "$dest/" || echo "mbc: could not copy ${nb##*/}" >&2
  done
else
  echo "mbc: $dest is not writable; notebooks are in $src" >&2
fi
cd "${HOME:-/home/jovyan}" 2>/dev/null || true
exec jupyterhub-singleuser "$@"

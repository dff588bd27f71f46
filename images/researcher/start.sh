#!/bin/sh
# The researcher server's start: the notebooks into ~/notebooks (only those not there yet: a
# researcher's edits are never overwritten), each course's material into ~/courses/<course>
# (MBC_COURSES, set by the hub: nbgitpuller's merge keeps a student's edits), then
# jupyterhub-singleuser with the hub's arguments.
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
# from the hub API, with this server's token; a course with nothing published yet, a hub that
# does not answer within a minute or a failed merge is logged, and the server starts anyway
for course in $(printf '%s' "${MBC_COURSES:-}" | tr ',' ' '); do
  timeout 60 mbc course pull "$course" --dest "${HOME:-/home/jovyan}/courses/$course" ||
    echo "mbc: course $course: material not pulled (see above); retry with: mbc course pull $course" >&2
done
cd "${HOME:-/home/jovyan}" 2>/dev/null || true
exec jupyterhub-singleuser "$@"

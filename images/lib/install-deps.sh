#!/bin/sh
# Installs an image's Python dependencies (not the mbc package: that comes last, in its own
# layer) into the venv /opt/mbc/venv.
#
#   install-deps.sh SET        SET: researcher | hub
#
# Reads /tmp/mbc-build/: pyproject.toml (mbc's dependencies and the SET's extra),
# images/SET/requirements.txt (what the image adds) and, when the build context carries a
# wheelhouse, wheelhouse/wheels + wheelhouse/SET.lock: then pip installs offline
# (--no-index --find-links), the lock as constraints.
#
# Bases: a Jupyter Docker Stacks image (conda python, CUDA torch): the venv sees conda's
# packages (--system-site-packages) and its torch is pinned as installed, so pip never swaps
# it. Any other base (mbc-base): a plain venv on the system python3; torch from the list.
set -eu
SET=$1
B=/tmp/mbc-build
VENV=/opt/mbc/venv
EXTRA=ml
[ "$SET" = hub ] && EXTRA=hub

if [ -x "${CONDA_DIR:-/opt/conda}/bin/python" ]; then
  PY="${CONDA_DIR:-/opt/conda}/bin/python"
  STACKS=1
else
  PY=python3
  STACKS=0
fi
if [ "$STACKS" = 1 ]; then
  "$PY" -m venv --system-site-packages "$VENV"
else
  "$PY" -m venv "$VENV"
fi

# mbc's requirements (core + extra) from pyproject.toml; on Stacks without its torch pin.
"$VENV/bin/python" - "$B/pyproject.toml" "$EXTRA" "$STACKS" >"$B/reqs.txt" <<'PYEOF'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = project["dependencies"] + project["optional-dependencies"][sys.argv[2]]
for r in reqs:
    if sys.argv[3] == "1" and re.match(r"torch\b", r):
        continue
    print(r)
PYEOF
cat "$B/images/$SET/requirements.txt" >>"$B/reqs.txt"

: >"$B/constraints.txt"
if [ "$STACKS" = 1 ]; then
  sed -i '/^torch\b/d' "$B/reqs.txt"
  if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    v=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('torch'))")
    echo "torch==$v" >>"$B/constraints.txt"
    echo "mbc: keeping the base image's torch $v"
  fi
fi

# an extra CA bundle (lib/ca.sh) is in the system store; pip and requests use that store too
if [ -d /usr/local/share/ca-certificates/mbc ]; then
  export PIP_CERT=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi

set -- --no-cache-dir --disable-pip-version-check
if [ -d "$B/wheelhouse/wheels" ] && ls "$B/wheelhouse/wheels" | grep -q .; then
  echo "mbc: installing offline from the wheelhouse"
  set -- "$@" --no-index --find-links "$B/wheelhouse/wheels"
  if [ -f "$B/wheelhouse/$SET.lock" ]; then
    if [ "$STACKS" = 1 ]; then
      grep -Ev '^(torch|triton|nvidia-)' "$B/wheelhouse/$SET.lock" >>"$B/constraints.txt"
    else
      cat "$B/wheelhouse/$SET.lock" >>"$B/constraints.txt"
    fi
  fi
fi
"$VENV/bin/pip" install "$@" -c "$B/constraints.txt" -r "$B/reqs.txt"

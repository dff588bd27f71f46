#!/usr/bin/env bash
# The one entry point for mbc's images (docs/images.md).
#
#   images/build.sh wheelhouse [DIR]   on a connected machine: every wheel the images install,
#                                      the mbc wheel and configurable-http-proxy, into DIR
#                                      (default .cache/wheelhouse); carry DIR to an air-gapped site
#   images/build.sh base               mbc-base:bookworm (+ -node), debootstrap, no registry (root)
#   images/build.sh researcher         mbc-researcher:latest
#   images/build.sh hub                mbc-hub:latest
#   images/build.sh all                base, researcher, hub
#   images/build.sh context-archive SET FILE
#                                      the build context of SET (hub | researcher) as a
#                                      reproducible .tar.gz, only SET's wheels: built on another
#                                      host with `docker build` (the Ansible images role)
#
# Environment:
#   MBC_RESEARCHER_BASE   researcher base image (default: the Jupyter Docker Stacks CUDA PyTorch
#                         image); mbc-base:bookworm for a CPU image built offline
#   MBC_HUB_BASE          hub base image (default mbc-base:bookworm-node)
#   MBC_WHEELHOUSE        a wheelhouse made by `wheelhouse`: pip installs offline from it
#   MBC_EXTRA_CA_BUNDLE   PEM file of extra CA certificates (TLS-inspecting proxy): added to the
#                         images' trust store and used by pip during the build
#   MBC_RESEARCHER_TAG, MBC_HUB_TAG   image tags (mbc-researcher:latest, mbc-hub:latest)
#   MBC_IMAGE_PYTHON      python version the wheelhouse is resolved for (default 3.11.2: bookworm's)
#   MBC_PIP               the pip that makes the wheelhouse (default: .venv's, else python3's)
#   MBC_BUILD_NETWORK     `docker build --network` (default: none when MBC_WHEELHOUSE is set, so
#                         an offline build is proven offline; else docker's default)
#   MBC_DOCKER_BUILD_ARGS extra `docker build` arguments (e.g. --no-cache, --pull)
#   MBC_CONTEXT_DIR       where the build context is assembled (default .cache/images/context)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STACKS_BASE=quay.io/jupyter/pytorch-notebook:cuda12-latest
RESEARCHER_BASE=${MBC_RESEARCHER_BASE:-$STACKS_BASE}
HUB_BASE=${MBC_HUB_BASE:-mbc-base:bookworm-node}
RESEARCHER_TAG=${MBC_RESEARCHER_TAG:-mbc-researcher:latest}
HUB_TAG=${MBC_HUB_TAG:-mbc-hub:latest}
CHP_VERSION=4.6.3
# the wheelhouse is resolved for the images' python (Debian bookworm's python3), not the host's
IMAGE_PYTHON=${MBC_IMAGE_PYTHON:-3.11.2}
CTX=${MBC_CONTEXT_DIR:-$ROOT/.cache/images/context}

die() { echo "images/build.sh: $*" >&2; exit 1; }
log() { echo "== images: $*" >&2; }

pip_cmd() {
  if [[ -n ${MBC_PIP:-} ]]; then
    echo "$MBC_PIP"
  elif [[ -x $ROOT/.venv/bin/python ]]; then
    echo "$ROOT/.venv/bin/python -m pip"
  else
    echo "python3 -m pip"
  fi
}

# The mbc wheel, reproducible (fixed timestamps), so an unchanged package keeps its layer cached.
build_mbc_wheel() { # OUTDIR
  local out=$1 pip
  pip=$(pip_cmd)
  rm -rf "$out" && mkdir -p "$out"
  if SOURCE_DATE_EPOCH=315532800 $pip wheel --quiet --no-deps --no-build-isolation -w "$out" "$ROOT" >/dev/null 2>&1 ||
    SOURCE_DATE_EPOCH=315532800 $pip wheel --quiet --no-deps -w "$out" "$ROOT" >/dev/null; then
    return 0
  fi
  return 1
}

# ---------------------------------------------------------------------------------- wheelhouse
# Resolves each image's set with the host's pip (its own config applies: on CI machines that is
# what keeps torch the CPU wheel), writes SET.lock, then fetches/builds exactly those wheels.
cmd_wheelhouse() {
  local dir=${1:-${MBC_WHEELHOUSE:-$ROOT/.cache/wheelhouse}} pip set tmp extra
  pip=$(pip_cmd)
  mkdir -p "$dir/wheels"
  dir=$(cd "$dir" && pwd)
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  for set in researcher hub; do
    extra=ml
    [[ $set == hub ]] && extra=hub
    log "wheelhouse: resolving the $set set"
    PYTHONWARNINGS=ignore $pip install --quiet --dry-run --ignore-installed --no-build-isolation \
      --python-version "$IMAGE_PYTHON" --only-binary=:all: --report "$tmp/$set.json" \
      "$ROOT[$extra]" -r "images/$set/requirements.txt" 2> >(grep -v "is ignored: it is neither" >&2)
    python3 - "$tmp/$set.json" >"$dir/$set.lock" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
for item in sorted(report["install"], key=lambda i: i["metadata"]["name"].lower()):
    meta = item["metadata"]
    if meta["name"].lower() != "mbc":
        print(f"{meta['name']}=={meta['version']}")
EOF
  done
  log "wheelhouse: fetching wheels into $dir/wheels"
  sort -u "$dir/researcher.lock" "$dir/hub.lock" >"$tmp/all.lock"
  $pip wheel --quiet --no-deps --only-binary=:all: -w "$dir/wheels" -r "$tmp/all.lock" 2> >(grep -v "is ignored: it is neither" >&2)
  if ls "$dir/wheels" | grep -Eq '^(nvidia_(cu|nccl|nvjitlink|nvshmem|nvtx)|triton-)'; then
    die "the wheelhouse holds CUDA wheels (nvidia-cu*, triton): torch did not resolve to a CPU build"
  fi
  build_mbc_wheel "$dir/mbc" || die "could not build the mbc wheel"
  log "wheelhouse: configurable-http-proxy $CHP_VERSION"
  command -v npm >/dev/null || die "npm is needed for configurable-http-proxy (apt-get install npm)"
  if [[ ! -x $dir/npm/node_modules/.bin/configurable-http-proxy ]] ||
    ! grep -q "\"version\": \"$CHP_VERSION\"" "$dir/npm/node_modules/configurable-http-proxy/package.json"; then
    npm install --prefix "$dir/npm" --no-audit --no-fund --loglevel=error --omit=dev \
      "configurable-http-proxy@$CHP_VERSION" >/dev/null
  fi
  log "wheelhouse ready: $dir ($(ls "$dir/wheels" | wc -l) wheels, $(du -sh "$dir" | cut -f1))"
}

# ------------------------------------------------------------------------------ build context
# A dedicated context: only what the Dockerfiles copy (no .venv, .cache, work-demo, .git).
make_context() {
  local wh=${MBC_WHEELHOUSE:-}
  rm -rf "$CTX"
  mkdir -p "$CTX"/{wheelhouse,mbc,ca,npm}
  touch "$CTX/wheelhouse/.keep" "$CTX/ca/.keep" "$CTX/npm/.keep"
  tar -C "$ROOT" -c --exclude=__pycache__ --exclude='*.pyc' --exclude=.ipynb_checkpoints \
    pyproject.toml README.md images hub datasets notebooks | tar -C "$CTX" -x
  if [[ -n $wh ]]; then
    [[ -d $wh/wheels ]] || die "MBC_WHEELHOUSE=$wh has no wheels/ (make it: images/build.sh wheelhouse $wh)"
    mkdir -p "$CTX/wheelhouse/wheels"
    cp -al "$wh"/wheels/. "$CTX/wheelhouse/wheels/" 2>/dev/null || cp -a "$wh"/wheels/. "$CTX/wheelhouse/wheels/"
    cp "$wh"/*.lock "$CTX/wheelhouse/" 2>/dev/null || true
    [[ -d $wh/npm/node_modules ]] && cp -a "$wh/npm/node_modules" "$CTX/npm/"
  fi
  if [[ ! -d $CTX/npm/node_modules ]]; then
    # not in a wheelhouse: fetched once with the host's npm, reused
    local cache=$ROOT/.cache/images/npm
    if [[ ! -x $cache/node_modules/.bin/configurable-http-proxy ]]; then
      command -v npm >/dev/null || die "npm is needed for configurable-http-proxy, or MBC_WHEELHOUSE"
      npm install --prefix "$cache" --no-audit --no-fund --loglevel=error --omit=dev \
        "configurable-http-proxy@$CHP_VERSION" >/dev/null
    fi
    cp -a "$cache/node_modules" "$CTX/npm/"
  fi
  if ! build_mbc_wheel "$CTX/mbc"; then
    [[ -n $wh ]] && ls "$wh"/mbc/*.whl >/dev/null 2>&1 || die "could not build the mbc wheel"
    log "using the wheelhouse's mbc wheel"
    cp "$wh"/mbc/*.whl "$CTX/mbc/"
  fi
  if [[ -n ${MBC_EXTRA_CA_BUNDLE:-} ]]; then
    [[ -s $MBC_EXTRA_CA_BUNDLE ]] || die "MBC_EXTRA_CA_BUNDLE=$MBC_EXTRA_CA_BUNDLE is not a file"
    cp "$MBC_EXTRA_CA_BUNDLE" "$CTX/ca/mbc-extra-ca.crt"
  fi
}

# The context of one image as a reproducible archive (same inputs, same bytes: fixed order,
# times and owners), holding only the wheels of that image's lock.
cmd_context_archive() { # SET FILE
  local set=${1:-} out=${2:-}
  [[ $set == hub || $set == researcher ]] || die "context-archive: SET is hub or researcher, not '${set}'"
  [[ -n $out ]] || die "context-archive: name the archive to write"
  make_context
  if [[ -f $CTX/wheelhouse/$set.lock ]]; then
    # keep the wheels SET's lock names (local versions such as +cpu match their public part)
    python3 - "$CTX/wheelhouse" "$set" <<'EOF'
import re, sys
from pathlib import Path
wheelhouse, kept = Path(sys.argv[1]), sys.argv[2]
def key(name, version):
    return re.sub(r"[-_.]+", "_", name).lower(), version.strip().split("+")[0]
lock = (wheelhouse / f"{kept}.lock").read_text().splitlines()
wanted = {key(*line.split("==")) for line in lock if "==" in line}
for wheel in (wheelhouse / "wheels").glob("*.whl"):
    if key(*wheel.name.split("-")[:2]) not in wanted:
        wheel.unlink()
for other in wheelhouse.glob("*.lock"):
    if other.stem != kept:
        other.unlink()
EOF
  fi
  mkdir -p "$(dirname "$out")"
  tar -C "$CTX" --sort=name --mtime=@315532800 --owner=0 --group=0 --numeric-owner \
    --format=gnu -c . | gzip -n >"$out.tmp"
  mv "$out.tmp" "$out"
  log "context of $set: $out ($(du -h "$out" | cut -f1), $(find "$CTX/wheelhouse" -name '*.whl' | wc -l) wheels)"
}

docker_build() { # TAG DOCKERFILE BASE
  local tag=$1 file=$2 base=$3 net=${MBC_BUILD_NETWORK:-}
  [[ -z $net && -n ${MBC_WHEELHOUSE:-} ]] && net=none
  log "docker build $tag (FROM $base)"
  # shellcheck disable=SC2086
  docker build -t "$tag" -f "$CTX/$file" --build-arg "BASE_IMAGE=$base" ${net:+--network "$net"} \
    ${MBC_DOCKER_BUILD_ARGS:-} "$CTX" 2> >(grep -v -e "legacy builder is deprecated" -e "Install the buildx" \
    -e "docs.docker.com/go/buildx" -e '^ *$' >&2)
}

need_docker() {
  command -v docker >/dev/null && docker info >/dev/null 2>&1 ||
    die "no docker engine answers (make docker-engine)"
}

cmd_base() { "$ROOT/images/base/build.sh"; }

cmd_researcher() {
  need_docker
  if [[ $RESEARCHER_BASE == mbc-base* && -z ${MBC_WHEELHOUSE:-} ]]; then
    die "FROM $RESEARCHER_BASE needs MBC_WHEELHOUSE (torch from the index is a CUDA build of several GB)"
  fi
  make_context
  docker_build "$RESEARCHER_TAG" images/researcher/Dockerfile "$RESEARCHER_BASE"
}

cmd_hub() {
  need_docker
  make_context
  docker_build "$HUB_TAG" images/hub/Dockerfile "$HUB_BASE"
}

case ${1:-} in
  wheelhouse) shift; cmd_wheelhouse "$@" ;;
  base) cmd_base ;;
  researcher) cmd_researcher ;;
  hub) cmd_hub ;;
  all) cmd_base; cmd_researcher; cmd_hub ;;
  context-archive) shift; cmd_context_archive "$@" ;;
  *) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

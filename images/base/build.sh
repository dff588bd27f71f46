#!/usr/bin/env bash
# mbc-base:bookworm, built without any container registry: debootstrap (minbase) of Debian
# bookworm from the Debian mirror this machine's apt already uses, imported with `docker import`.
#
#   images/base/build.sh            # as root; skipped in a second when this script is unchanged
#
# Makes two images, both tagged with a hash of this script (rebuilt only when it changes):
#   mbc-base:bookworm        Python 3.11 (python3-venv), ca-certificates, tini, git (courses:
#                            the hub commits material, servers pull it): the researcher base
#   mbc-base:bookworm-node   the same plus Debian's nodejs, as one extra layer: the hub's base
#                            (configurable-http-proxy needs node; the researcher image does not)
#
# Environment: MBC_DEBIAN_MIRROR=URL overrides the mirror read from /etc/apt/sources*;
# MBC_BASE_TAG (default mbc-base:bookworm); MBC_BASE_FORCE=1 rebuilds anyway.
set -euo pipefail

SUITE=bookworm
TAG=${MBC_BASE_TAG:-mbc-base:bookworm}
REPO=${TAG%:*}
NODE_TAG=${TAG}-node
PACKAGES=python3,python3-venv,ca-certificates,tini,git
NODE_PACKAGES="nodejs"

die() { echo "images/base/build.sh: $*" >&2; exit 1; }
log() { echo "== base: $*" >&2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HASH=$(sha256sum "$HERE/build.sh" | cut -c1-12)
HASH_TAG="$TAG-$HASH"
NODE_HASH_TAG="$NODE_TAG-$HASH"

command -v docker >/dev/null || die "docker is not installed (make docker-engine)"
if ! docker info >/dev/null 2>&1; then
  [[ $(id -u) == 0 ]] || die "the docker engine does not answer, or not to this user: run as root (sudo $0)"
  die "the docker engine does not answer (make docker-engine)"
fi

if [[ -z ${MBC_BASE_FORCE:-} ]] &&
  docker image inspect "$HASH_TAG" >/dev/null 2>&1 &&
  docker image inspect "$NODE_HASH_TAG" >/dev/null 2>&1; then
  docker tag "$HASH_TAG" "$TAG"
  docker tag "$NODE_HASH_TAG" "$NODE_TAG"
  log "$TAG and $NODE_TAG are up to date (build script $HASH)"
  exit 0
fi

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap and chroot need it): sudo $0"
command -v debootstrap >/dev/null || die "debootstrap is not installed: apt-get install debootstrap"

# The Debian mirror: the one this machine's apt uses for $SUITE (deb822 .sources first, then the
# classic one-line format), so no host name is written down here.
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    # one deb822 stanza per paragraph: a URI whose stanza lists the suite itself
    awk -v suite="$SUITE" '
      BEGIN { RS = ""; FS = "\n" }
      {
        uris = ""; ok = 0; deb = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
          if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
          if ($i ~ /^Types:/ && $i ~ /(^|[ \t])deb([ \t]|$)/) deb = 1
        }
        if (ok && deb && uris != "") { split(uris, u, /[ \t]+/); print u[1]; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    # deb [options] URL SUITE COMPONENTS...
    sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }'
  done
}
MIRROR=${MBC_DEBIAN_MIRROR:-$(find_mirror | head -n1)}
[[ -n $MIRROR ]] || die "no Debian $SUITE mirror in /etc/apt/sources.list{,.d/*.sources}; set MBC_DEBIAN_MIRROR"
log "debootstrap $SUITE from $MIRROR"

WORK=$(mktemp -d /var/tmp/mbc-base.XXXXXX)
ROOT=$WORK/rootfs
cleanup() {
  local m
  for m in "$ROOT/proc" "$ROOT/sys" "$ROOT/dev/pts"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m" || true
  done
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
  { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }

# Small and quiet: no docs, man pages or translations on later installs; no recommends.
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/01-mbc-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
cat >"$ROOT/etc/apt/apt.conf.d/01-mbc" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF

slim() {
  rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
    "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/lib/dpkg/*-old "$ROOT"/var/log/* "$ROOT"/tmp/* \
    "$ROOT"/etc/resolv.conf "$ROOT"/etc/hostname
  find "$ROOT"/usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  find "$ROOT"/usr/share/doc -mindepth 1 -type d -empty -delete 2>/dev/null || true
  rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/lintian/*
  find "$ROOT"/usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
  : >"$ROOT/etc/machine-id"
}
slim

CHANGES=(
  --change "ENV LANG=C.UTF-8"
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  --change "LABEL org.mbc.base.build-hash=$HASH org.mbc.base.suite=$SUITE"
  --change 'CMD ["/bin/bash"]'
)
log "docker import -> $HASH_TAG"
tar --numeric-owner --xattrs -C "$ROOT" -c . | docker import "${CHANGES[@]}" - "$HASH_TAG" >/dev/null
docker tag "$HASH_TAG" "$TAG"

# The node layer: install nodejs in the same tree, then add only what changed (by ctime, which
# dpkg cannot set back) as one layer on top of the base image.
touch "$WORK/marker"
sleep 1
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mount -t proc proc "$ROOT/proc"
log "nodejs layer"
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive sh -c \
  "apt-get update -qq && apt-get install -y -qq $NODE_PACKAGES" >"$WORK/node.log" 2>&1 ||
  { tail -n 30 "$WORK/node.log" >&2; die "apt-get install $NODE_PACKAGES in the chroot failed"; }
umount "$ROOT/proc"
slim
mkdir -p "$WORK/ctx"
(cd "$ROOT" && find . -cnewer "$WORK/marker" \( -type f -o -type l \) -print0 |
  tar --numeric-owner --xattrs --null -T - -c -f "$WORK/ctx/node-layer.tar")
cat >"$WORK/ctx/Dockerfile" <<EOF
FROM $HASH_TAG
ADD node-layer.tar /
LABEL org.mbc.base.build-hash=$HASH org.mbc.base.node=1
EOF
docker build -q -t "$NODE_HASH_TAG" "$WORK/ctx" >"$WORK/docker-build.log" 2>&1 ||
  { cat "$WORK/docker-build.log" >&2; die "docker build of the node layer failed"; }
docker tag "$NODE_HASH_TAG" "$NODE_TAG"
log "built $TAG and $NODE_TAG (build script $HASH)"

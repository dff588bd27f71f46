#!/bin/sh
# Adds the build context's extra CA bundle (ca/*.crt, PEM, one or many certificates; none:
# nothing to do) to the image's trust store, for sites behind a TLS-inspecting proxy. Debian
# and Ubuntu bases alike (update-ca-certificates); one file per certificate, as it expects.
set -eu
src=${1:-/tmp/mbc-ca}
dest=/usr/local/share/ca-certificates/mbc
for f in "$src"/*.crt; do
  [ -s "$f" ] || continue
  mkdir -p "$dest"
  awk -v out="$dest/$(basename "$f" .crt)" '
    /-----BEGIN CERTIFICATE-----/ { n++; file = sprintf("%s-%02d.crt", out, n) }
    n && file { print > file }
    /-----END CERTIFICATE-----/ { close(file); file = "" }' "$f"
done
if [ -d "$dest" ] && ls "$dest" | grep -q '\.crt$'; then
  update-ca-certificates 2>/dev/null | grep -i added || true
fi
rm -rf "$src"

#!/usr/bin/env bash
# Unpack Courier-IMAP, Courier POP3 and Courier's authentication library from Debian's
# packages into PORTAL_COURIER_ROOT (default /var/cache/portal-tests/courier), for the tests
# that sync against a second real IMAP/POP3 server beside Dovecot (tests/servers/courier.py).
# They are not installed: Debian allows one IMAP server package at a time, and Dovecot is the
# installed one. Their shared libraries, which conflict with nothing, are installed as usual.
set -euo pipefail
root="${PORTAL_COURIER_ROOT:-/var/cache/portal-tests/courier}"
packages=(courier-imap courier-pop courier-base courier-authlib courier-authlib-userdb)
libraries=(libltdl7 libidn12 libgdbm6 libgamin0 libpcre3 libcourier-unicode4 libgnutls30 util-linux openssl)
if [ -x "$root/usr/bin/imapd" ] && [ -x "$root/usr/lib/courier/courier-authlib/authdaemond" ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends "${libraries[@]}" >/dev/null 2>&1; then
  apt-get update -qq || true
  apt-get install -y -qq --no-install-recommends "${libraries[@]}" >/dev/null
fi
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
(cd "$download" && apt-get download -q "${packages[@]}" >/dev/null 2>&1) || {
  apt-get update -qq || true
  (cd "$download" && apt-get download -q "${packages[@]}" >/dev/null)
}
mkdir -p "$root"
for deb in "$download"/*.deb; do dpkg -x "$deb" "$root"; done
echo "==> Courier unpacked in $root"

#!/usr/bin/env bash
# Set up and run the whole test suite. Installs what the tests need where it can (Python
# packages; Debian packages when run as root), starts nothing by hand: the test fixtures start
# Dovecot, the DNS and SMTP servers on loopback themselves. Uses PostgreSQL when it can reach
# one (DATABASE_URL, or a server on 127.0.0.1:5432), otherwise SQLite, and says so.
# PORTAL_TEST_STRICT=1 (set by CI) turns every missing component into a failure.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_venv.sh
setup_venv requirements-dev.txt

missing=()
DEBIAN_PACKAGES=(dovecot-imapd dovecot-pop3d isync chromium gettext)
need_debian=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_debian+=("$pkg")
done
if [ ${#need_debian[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing Debian packages: ${need_debian[*]}"
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${need_debian[@]}" >/dev/null || missing+=("Debian packages ${need_debian[*]}")
  else
    missing+=("Debian packages ${need_debian[*]} (not root: install them with apt-get)")
  fi
fi

# Courier-IMAP/POP3, the second real mail server the sync is tested against, is unpacked from
# Debian's packages rather than installed (Dovecot is the installed IMAP server).
if [ "$(id -u)" = 0 ]; then
  bash scripts/courier_packages.sh || missing+=("Courier-IMAP/POP3 (scripts/courier_packages.sh failed)")
else
  missing+=("Courier-IMAP/POP3 (runs in a mount namespace: needs root)")
fi

# axe-core (the accessibility checker the browser journeys inject into every page) comes
# from the npm registry into var/npm (git-ignored); Debian's nodejs lacks npm, hence both.
if ! command -v npm >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null || true
fi
if [ ! -f var/npm/node_modules/axe-core/axe.min.js ]; then
  if command -v npm >/dev/null; then
    npm install --silent --no-audit --no-fund --prefix var/npm axe-core@4 >/dev/null \
      || missing+=("axe-core (npm install failed)")
  else
    missing+=("axe-core (npm is missing: apt-get install nodejs npm)")
  fi
fi

if [ -z "${DATABASE_URL:-}" ]; then
  if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/portal"
  else
    missing+=("PostgreSQL (none on 127.0.0.1:5432 and DATABASE_URL unset): using SQLite")
  fi
fi
echo "==> database: ${DATABASE_URL:-SQLite}"

if [ ${#missing[@]} -gt 0 ]; then
  echo "==> could not provide:"
  printf '    - %s\n' "${missing[@]}"
  if [ "${PORTAL_TEST_STRICT:-0}" = 1 ]; then
    echo "PORTAL_TEST_STRICT=1: a missing component is a failure." >&2
    exit 1
  fi
  echo "    tests that need them are skipped (set PORTAL_TEST_STRICT=1 to fail instead)"
fi

exec .venv/bin/python -m pytest "$@"

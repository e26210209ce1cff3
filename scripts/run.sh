#!/usr/bin/env bash
# Set up and run the portal on embedded defaults: SQLite, a file-system Celery broker, the
# local outbox with its mail simulator, demo data. Web server, Celery worker and beat run
# side by side; stopping this script (Ctrl+C, SIGTERM) stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_venv.sh
if [ "${RUN_SKIP_INSTALL:-0}" = 1 ] && [ -x .venv/bin/python ]; then
  # The test suite's run of this script: .venv is set up already; no package index needed.
  .venv/bin/python scripts/compile_catalogues.py
else
  setup_venv requirements.txt
fi

export DEBUG="${DEBUG:-1}"
export PYTHONUNBUFFERED=1
PORT="${PORT:-8000}"
# Links in emails (Pay Now, invitations) point at this run, whatever its port.
export SITE_URL="${SITE_URL:-http://127.0.0.1:${PORT}}"
export EMAIL_BACKEND="${EMAIL_BACKEND:-invoicing.delivery.simulator.SimulatorBackend}"
# The demo mailboxes send through the demo's own SMTP server on loopback (manage.py
# demo_smtp), which the portal refuses to reach unless private hosts are allowed.
export DEMO_SMTP_PORT="${DEMO_SMTP_PORT:-2525}"
export OUTBOUND_ALLOW_PRIVATE_HOSTS="${OUTBOUND_ALLOW_PRIVATE_HOSTS:-1}"
LOG_DIR="${PORTAL_VAR_DIR:-var}/log"

.venv/bin/python manage.py migrate --no-input
.venv/bin/python manage.py setup_schedules
.venv/bin/python manage.py seed_demo

# Each process gets a process group of its own (setsid), so that stopping it also stops
# what it started (runserver's autoreloader runs the server in a child process).
PIDS=()
start() {
  setsid "$@" &
  PIDS+=("$!")
}
stop() {
  trap - INT TERM EXIT
  local pid alive
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return
    sleep 0.2
  done
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

mkdir -p "$LOG_DIR"
# One worker for every queue (production runs one set of workers per queue; see README).
start .venv/bin/celery -A portal worker --pool=solo -Q sync,send,webhooks,checks,default \
  --loglevel=INFO > "$LOG_DIR/worker.log" 2>&1
start .venv/bin/python manage.py demo_smtp > "$LOG_DIR/demo_smtp.log" 2>&1
start .venv/bin/celery -A portal beat --scheduler django_celery_beat.schedulers:DatabaseScheduler \
  --loglevel=INFO --pidfile= > "$LOG_DIR/beat.log" 2>&1

cat <<TXT

  Practice Portal is starting on ${SITE_URL}/
  Sign in as owner@demo.test (password: demo-portal-2026); the other demo logins are above.
  Mail the portal "sends" is kept in the Outbox (top menu); addresses at
  simulator.demo.test bounce, complain or go through as the README says.
  Worker and beat logs: ${LOG_DIR}/. Stop with Ctrl+C.

TXT
start .venv/bin/python manage.py runserver "127.0.0.1:${PORT}"
# Returns when the web server ends or a signal arrives (the traps then stop everything).
wait "${PIDS[3]}"

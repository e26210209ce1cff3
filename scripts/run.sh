#!/usr/bin/env bash
# Set up and run the portal on embedded defaults: SQLite, a file-system Celery broker, the
# local outbox for mail, demo data. Web server, Celery worker and beat run side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_venv.sh
setup_venv requirements.txt

export DEBUG="${DEBUG:-1}"
export PYTHONUNBUFFERED=1
PORT="${PORT:-8000}"

.venv/bin/python manage.py migrate --no-input
.venv/bin/python manage.py setup_schedules
.venv/bin/python manage.py seed_demo

mkdir -p var/log
# One worker for every queue (production runs one set of workers per queue; see README).
.venv/bin/celery -A portal worker --pool=solo -Q sync,send,webhooks,checks,default \
  --loglevel=INFO > var/log/worker.log 2>&1 &
WORKER=$!
.venv/bin/celery -A portal beat --scheduler django_celery_beat.schedulers:DatabaseScheduler \
  --loglevel=INFO --pidfile= > var/log/beat.log 2>&1 &
BEAT=$!
trap 'kill $WORKER $BEAT 2>/dev/null || true' EXIT INT TERM

cat <<TXT

  Practice Portal is starting on http://127.0.0.1:${PORT}/
  Sign in as owner@demo.test (password: demo-portal-2026); the other demo logins are above.
  Mail the portal "sends" is kept in the Outbox (top menu). Worker and beat logs: var/log/.
  Stop with Ctrl+C.

TXT
.venv/bin/python manage.py runserver "127.0.0.1:${PORT}"

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection as db_connection
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from portal.models import Heartbeat
from portal.schedules import PREFIX, SCHEDULES, Schedule, schedules_apply
from portal.tasks import heartbeat
from tests.db_locks import only_on_postgresql, second_meets_first

REPO = Path(__file__).resolve().parents[2]


def test_setup_schedules_declares_the_heartbeat(db):
    call_command("setup_schedules")
    task = PeriodicTask.objects.get(name=PREFIX + "worker heartbeat")
    assert (task.task, task.interval.every, task.enabled) == ("portal.heartbeat", 60, True)


def test_running_it_twice_keeps_one_entry(db):
    call_command("setup_schedules")
    call_command("setup_schedules")
    assert PeriodicTask.objects.filter(name__startswith=PREFIX).count() == len(SCHEDULES)


def test_a_schedule_no_longer_declared_is_disabled(db):
    schedules_apply([Schedule("old job", "portal.heartbeat", 30)])
    schedules_apply()
    assert not PeriodicTask.objects.get(name=PREFIX + "old job").enabled


def test_the_heartbeat_task_records_that_a_worker_ran(db):
    heartbeat.apply()
    assert Heartbeat.objects.get(name="worker").last_seen is not None


def test_identical_intervals_already_there_are_reused(db):
    # django-celery-beat does not make intervals unique: an admin, or an older deploy, may
    # have left two identical ones.
    existing = [IntervalSchedule.objects.create(every=60, period="seconds") for _ in range(2)]

    schedules_apply()

    task = PeriodicTask.objects.get(name=PREFIX + "worker heartbeat")
    assert task.interval == existing[0]
    assert IntervalSchedule.objects.filter(every=60, period="seconds").count() == 2


def test_a_task_rescheduled_by_hand_gets_its_declared_interval_back(db):
    schedules_apply()
    crontab = CrontabSchedule.objects.create(minute="5")
    PeriodicTask.objects.filter(name=PREFIX + "worker heartbeat").update(
        interval=None, crontab=crontab
    )

    schedules_apply()

    task = PeriodicTask.objects.get(name=PREFIX + "worker heartbeat")
    assert (task.crontab, task.interval.every) == (None, 60)


# --- two deploys at once: real concurrent transactions on PostgreSQL -----------------------

postgresql_only = only_on_postgresql("concurrent writers and advisory locks")


def _one_of_each() -> None:
    assert PeriodicTask.objects.filter(name__startswith=PREFIX).count() == len(SCHEDULES)
    periods = {schedule.every_seconds for schedule in SCHEDULES}
    for every in periods:
        assert IntervalSchedule.objects.filter(every=every, period="seconds").count() == 1


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_second_run_during_the_first_waits_and_changes_nothing():
    # The second finds no interval committed yet: only a lock keeps it right.
    second_meets_first(schedules_apply, schedules_apply)
    _one_of_each()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_two_deploys_running_setup_schedules_at_once_both_succeed(tmp_path):
    # Two processes, as two deploys run it: each waits for the other to be up, then both
    # run the command at the same moment.
    database = db_connection.settings_dict
    url = (
        f"postgres://{database['USER']}:{database['PASSWORD'] or ''}@{database['HOST']}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": url}
    script = (
        "import django, pathlib, sys, time\n"
        "django.setup()\n"
        "from django.core.management import call_command\n"
        "here = pathlib.Path(sys.argv[1])\n"
        "(here / sys.argv[2]).touch()\n"
        "while len(list(here.iterdir())) < 2:\n"
        "    time.sleep(0.01)\n"
        "call_command('setup_schedules')\n"
    )
    deploys = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), name],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("deploy-a", "deploy-b")
    ]
    results = [(deploy.wait(timeout=120), deploy.stderr.read()) for deploy in deploys]
    for deploy in deploys:
        deploy.stderr.close()

    assert results == [(0, ""), (0, "")]
    _one_of_each()

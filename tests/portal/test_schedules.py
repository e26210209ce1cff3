from __future__ import annotations

from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from portal.models import Heartbeat
from portal.schedules import PREFIX, SCHEDULES, Schedule, schedules_apply
from portal.tasks import heartbeat


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

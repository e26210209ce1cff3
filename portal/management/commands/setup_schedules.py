from django.core.management.base import BaseCommand

from portal.schedules import schedules_apply


class Command(BaseCommand):
    help = "Write the portal's periodic tasks into django-celery-beat's schedule."

    def handle(self, *args, **options):
        for name in schedules_apply():
            self.stdout.write(f"scheduled: {name}")

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.demo import DEMO_PASSWORD, seed_demo


class Command(BaseCommand):
    help = "Create (or top up) the demo firm, its users and 50 clients. Development only."

    def add_arguments(self, parser):
        parser.add_argument("--clients", type=int, default=50)
        parser.add_argument(
            "--allow-production",
            action="store_true",
            help="Seed even with DEBUG off (the demo passwords are public).",
        )

    def handle(self, *args, **options):
        if not settings.DEBUG and not options["allow_production"]:
            raise CommandError(
                "seed_demo creates users with public passwords; run it with DEBUG=1."
            )
        firm, logins = seed_demo(clients=options["clients"])
        self.stdout.write(self.style.SUCCESS(f"Demo firm: {firm.name}"))
        for login in logins:
            self.stdout.write(f"  {login.role:<6} {login.email}  password: {DEMO_PASSWORD}")
        self.stdout.write(
            f"  admin  support@demo.test  password: {DEMO_PASSWORD}  (support team, /admin/)"
        )

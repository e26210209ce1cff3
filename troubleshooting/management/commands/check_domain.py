from django.core.management.base import BaseCommand

from portal.dns import make_resolver
from troubleshooting.domain_checks import check_mx, check_sending_domain
from troubleshooting.services import sending_service
from troubleshooting.spf import check_host


class Command(BaseCommand):
    help = (
        "Check a sending domain's SPF, DKIM, DMARC and MX with the portal's resolver settings; "
        "with --ip, evaluate SPF (RFC 7208 check_host) for that sending address."
    )

    def add_arguments(self, parser):
        parser.add_argument("domain")
        parser.add_argument("--ip", help="evaluate SPF for this sending IP address")

    def handle(self, *args, **options):
        domain = options["domain"].strip().lower().rstrip(".")
        resolver = make_resolver()
        failed = 0
        for result in [
            *check_sending_domain(domain, sending_service(), resolver),
            check_mx(domain, resolver),
        ]:
            mark = "ok  " if result.ok else "FAIL"
            failed += not result.ok
            code = f" [{result.problem_code}]" if result.problem_code else ""
            self.stdout.write(f"{mark} {result.name}: {result.summary}{code}")
            for name, rtype, text in result.answers:
                self.stdout.write(f"       dns: {name} {rtype} {text}")
            if result.publish:
                p = result.publish
                self.stdout.write(f'       publish: {p.name} {p.type} "{p.value}"')
        if options["ip"]:
            spf = check_host(options["ip"], domain, f"postmaster@{domain}", resolver=resolver)
            self.stdout.write(
                f"spf for {options['ip']}: {spf.result}"
                + (f" ({spf.problem})" if spf.problem else "")
            )
            for answer in spf.answers:
                self.stdout.write(f"       dns: {answer.name} {answer.rtype} {answer.text}")
        if failed:
            self.stdout.write(f"{failed} check(s) need attention.")

"""SMTP sink for the local stack and the tests (run by Debian's aiosmtpd).

Stores every accepted message in a Maildir. Faults on demand, for send-error tests: a file
named `fault` in the Maildir's parent holding `451 N` answers the next N messages with 451
(transient), `550` answers every message with 550 (permanent), until the file is removed.
"""
import mailbox
import os

from aiosmtpd.handlers import Mailbox


class MaildirSink(Mailbox):
    def __init__(self, mail_dir):
        super().__init__(mail_dir)
        self.fault_file = os.path.join(os.path.dirname(os.path.abspath(mail_dir)), "fault")

    def _fault(self):
        try:
            with open(self.fault_file) as f:
                parts = f.read().split()
        except OSError:
            return None
        if not parts:
            return None
        code = parts[0]
        if code == "451" and len(parts) > 1:
            left = int(parts[1]) - 1
            if left <= 0:
                os.remove(self.fault_file)
            else:
                with open(self.fault_file, "w") as f:
                    f.write(f"451 {left}")
        if code == "451":
            return "451 4.3.0 Temporary failure, try again later"
        if code == "550":
            return "550 5.1.1 Mailbox unavailable"
        return None

    async def handle_DATA(self, server, session, envelope):
        fault = self._fault()
        if fault:
            return fault
        return await super().handle_DATA(server, session, envelope)

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) < 1:
            parser.error("The directory for the maildir is required")
        return cls(args[0])

"""SMTP as Outlook's submission port has it (smtp.office365.com:587): STARTTLS with the given
certificate, then AUTH (LOGIN or PLAIN) required, in front of the stack's Maildir sink
(smtp_sink.MaildirSink: faults on demand too). For the tests and `SECURE=1` demo.

usage: smtp_tls.py HOST PORT MAILDIR CERT KEY USER PASSWORD_FILE
"""
import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from smtp_sink import MaildirSink


def main():
    host, port, maildir, cert, key, user, password_file = sys.argv[1:8]
    with open(password_file) as f:
        password = f.read().strip()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False)

    class Submission(Controller):
        def factory(self):
            return SMTP(
                self.handler,
                hostname="localhost",
                tls_context=context,
                require_starttls=True,
                auth_required=True,
                auth_require_tls=True,
                authenticator=authenticator,
            )

    server = Submission(MaildirSink(maildir), hostname=host, port=int(port))
    server.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


if __name__ == "__main__":
    main()

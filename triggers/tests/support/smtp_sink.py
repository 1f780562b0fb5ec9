"""A real SMTP server for the email tests (aiosmtpd): every message it
accepts is written to DIR as NNNN.eml. MODE is `plain`, `starttls` (STARTTLS
required before MAIL) or `tls` (TLS from the first byte), with the server
certificate CERT and key KEY (`-` for plain). With USER and PASSWORD it
requires AUTH.

usage: smtp_sink.py DIR PORT MODE CERT KEY [USER PASSWORD]
Prints "ready" once it listens; stops when stdin closes.
"""

import logging
import os
import ssl
import sys
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Sink:
    def __init__(self, out):
        self.out = out
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(self.out, "%04d.eml" % self.count)
        with open(path + ".tmp", "wb") as f:
            f.write(b"X-Envelope-From: " + envelope.mail_from.encode() + b"\r\n")
            f.write(b"X-Envelope-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(envelope.original_content)
        os.rename(path + ".tmp", path)
        return "250 OK queued"


def main():
    # refused handshakes are part of the tests: keep the output quiet
    logging.disable(logging.CRITICAL)
    warnings.filterwarnings("ignore")
    out, port, mode, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    kwargs = {}
    if len(sys.argv) == 8:
        user, password = sys.argv[6].encode(), sys.argv[7].encode()

        def check(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login == user and auth_data.password == password
            return AuthResult(success=ok)

        kwargs = dict(authenticator=check, auth_required=True, auth_require_tls=mode != "plain")
    if mode != "plain":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        if mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        else:
            kwargs.update(ssl_context=context)
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()

"""A real SMTP server for trib-render's test send: aiosmtpd on loopback, AUTH required.

Usage: python3 smtp_sink.py OUT_JSON PORT. Prints `ready` once listening, writes the first
received message (from, to, subject, text and HTML parts, decoded) as JSON to OUT_JSON, and
stops when its stdin closes.
"""

import json
import os
import sys
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

OUT, PORT = sys.argv[1], int(sys.argv[2])


class Handler:
    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        document = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(message["from"]),
            "subject": str(message["subject"]),
            "text": message.get_body(("plain",)).get_content(),
            "html": message.get_body(("html",)).get_content(),
            "authenticated": bool(session.authenticated),
        }
        with open(OUT + ".tmp", "w", encoding="utf-8") as file:
            json.dump(document, file)
        os.replace(OUT + ".tmp", OUT)
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"qa" and auth_data.password == b"s3cret"
    return AuthResult(success=ok)


controller = Controller(
    Handler(),
    hostname="127.0.0.1",
    port=PORT,
    authenticator=authenticator,
    auth_require_tls=False,
    auth_required=True,
)
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()

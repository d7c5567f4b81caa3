"""Email to authors: the result of a preprint build (preview link, or the logs that explain why not)."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

log = logging.getLogger("neurolibre.notify")


@dataclass(frozen=True)
class SMTPSettings:
    host: str
    port: int = 25
    security: str = "none"  # "none", "starttls" or "tls"
    username: str = ""
    password: str = ""
    sender: str = "neurolibre@localhost"
    timeout: float = 30.0


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime: str = "text/plain"


class Mailer:
    def __init__(self, settings: SMTPSettings | None):
        self.settings = settings

    @property
    def enabled(self) -> bool:
        return bool(self.settings and self.settings.host)

    def message(self, to: str, subject: str, body: str,
                attachments: list[Attachment] = ()) -> EmailMessage:  # fmt: skip
        assert self.settings
        msg = EmailMessage()
        msg["From"] = formataddr(("NeuroLibre", self.settings.sender))
        msg["To"] = to
        msg["Subject"] = subject
        msg["Message-ID"] = make_msgid(domain=self.settings.sender.rpartition("@")[2] or None)
        msg.set_content(body)
        for a in attachments:
            maintype, _, subtype = a.mime.partition("/")
            msg.add_attachment(a.content, maintype=maintype, subtype=subtype, filename=a.filename)
        return msg

    async def send(self, msg: EmailMessage) -> None:
        """Send, or raise OSError / smtplib.SMTPException with the server's reason."""
        await asyncio.to_thread(self._send, msg)

    def _send(self, msg: EmailMessage) -> None:
        s = self.settings
        assert s
        context = ssl.create_default_context()
        if s.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout,
                                                    context=context)  # fmt: skip
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        with client:
            if s.security == "starttls":
                client.starttls(context=context)
            if s.username:
                client.login(s.username, s.password)
            client.send_message(msg)

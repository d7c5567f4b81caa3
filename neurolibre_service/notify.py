"""Email to authors: the result of a preprint build (preview link, or the logs that explain why not).

An email is bounded whatever a build printed: logs are attached as their last lines (at most
`log_lines` lines and `log_bytes` bytes each) with a first line that says so and where the
whole log is, and the body is cut at `body_chars`.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from pathlib import Path

from .logs import human_size

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


def log_excerpt(path: Path, *, lines: int, max_bytes: int, link: str) -> bytes:
    """The end of a log file for an email: its last `lines` lines within `max_bytes`.

    Only the end of the file is read. When anything is left out, the first line says how
    much is attached and gives `link`, where the whole log is.
    """
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            start = max(0, size - max_bytes)
            f.seek(start)
            data = f.read(max_bytes)
    except FileNotFoundError:
        return b""
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()  # the last line's newline
    if start > 0 and len(parts) > 1:
        parts = parts[1:]  # the first is the end of a longer line
    kept = parts[-lines:] if lines > 0 else []
    text = b"".join(p + b"\n" for p in kept)
    if start == 0 and len(kept) == len(parts):
        return text
    note = (
        f"[This is the end of the log: its last {len(kept):,} lines "
        f"({human_size(len(text))} of {human_size(size)}). The whole log: {link} ]\n"
    )
    return note.encode() + text


class Mailer:
    def __init__(self, settings: SMTPSettings | None, *, log_lines: int = 200,
                 log_bytes: int = 256 * 1024, body_chars: int = 64 * 1024):  # fmt: skip
        self.settings = settings
        self.log_lines = log_lines
        self.log_bytes = log_bytes
        self.body_chars = body_chars

    def log_attachment(self, filename: str, path: Path, link: str) -> Attachment:
        """A log attached as its last lines, with a link to the whole log when it is cut."""
        content = log_excerpt(path, lines=self.log_lines, max_bytes=self.log_bytes, link=link)
        return Attachment(filename, content)

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
        if len(body) > self.body_chars:
            body = body[: self.body_chars] + "\n[... the rest of this message was cut]\n"
        msg.set_content(body)
        for a in attachments:
            content = a.content
            if len(content) > self.log_bytes + 1024:  # the excerpt's own note fits in 1 KB
                content = b"[... cut: the end of the file follows]\n" + content[-self.log_bytes :]
            maintype, _, subtype = a.mime.partition("/")
            msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=a.filename)
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

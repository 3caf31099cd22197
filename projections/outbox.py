"""The email outbox: a follower of the notifications projection that mails each
notification whose user has an email address, tracked by position like a
projection (templates: projections/mail_templates/<kind>.txt, plain text).

Each cursor's emails are sent inside the transaction that records the cursor as
done, the position written first: a second outbox (another API node) waits on
that row and then fails instead of sending them again. A crash after the send
and before the commit sends that cursor's emails once more on the next start."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.message import EmailMessage
from itertools import groupby
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import unquote, urlsplit

from eventsourcing.persistence import IntegrityError, PersistenceError

from ledger.loop import WakeableLoop
from projections.store import ViewStore

log = logging.getLogger("projections.outbox")
TEMPLATES = Path(__file__).parent / "mail_templates"
KEY = "outbox:email"  # its tracking key in the projections' store
Rows = list[dict[str, Any]]


def render(row: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) of a notification, from its kind's template."""
    text = (TEMPLATES / f"{row['kind']}.txt").read_text()
    values = {k: _word(k, v) for k, v in row["detail"].items()}
    values.update(
        kind=row["kind"], at=_word("at", row["occurred_at"]),
        subscription_id=row["stripe_subscription_id"],
    )  # fmt: skip
    first, _, body = Template(text).safe_substitute(values).partition("\n")
    return first.removeprefix("Subject:").strip(), body.lstrip("\n")


def _word(name: str, value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 10**9:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "none" if value is None else str(value)


class Mailer:
    """SMTP from a URL: smtp://[user:password@]host:port (smtps:// for TLS)."""

    def __init__(self, url: str, sender: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("LEDGER_SMTP_URL must look like smtp://host:port")
        self.tls = parts.scheme == "smtps"
        self.host, self.port = parts.hostname, parts.port or (465 if self.tls else 25)
        self.user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self.sender, self.timeout = sender, timeout

    def send(self, messages: Iterable[EmailMessage]) -> None:
        messages = list(messages)
        if not messages:
            return
        kind = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
        with kind(self.host, self.port, timeout=self.timeout) as smtp:
            if self.user and self._password:
                smtp.login(self.user, self._password)
            for message in messages:
                try:
                    smtp.send_message(message)
                except smtplib.SMTPRecipientsRefused:  # that address only: the others go on
                    log.warning("the mail server refused %s", message["X-Ledger-Notification"])

    def message(self, row: dict[str, Any]) -> EmailMessage:
        subject, body = render(row)
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, row["email"], subject
        message["X-Ledger-Notification"] = f"{row['cursor']} {row['kind']}"
        message.set_content(body)
        return message


class Outbox(WakeableLoop):
    def __init__(
        self,
        store: ViewStore,
        after: Callable[[int, int], Rows],
        last_cursor: Callable[[], int],
        mailer: Mailer,
        interval: float = 0.5,
    ) -> None:
        super().__init__("outbox", self.run_once, interval)
        self.store, self._after, self._last_cursor, self.mailer = store, after, last_cursor, mailer
        self._checked_start = False

    def start(self) -> None:
        try:  # before serving, not at the first tick: what comes after is mailed
            self.begin()
        except PersistenceError:
            log.warning("outbox: the store is unavailable; deciding at the first tick")
        super().start()

    def begin(self) -> None:
        """The first start on a store with history: mail from now on, not the past."""
        if self._checked_start:
            return
        if self.store.position(KEY) == 0 and (start := self._last_cursor()):
            self._record(start)
        self._checked_start = True

    def run_once(self) -> int:
        """Send what is new; returns how many emails were sent."""
        self.begin()
        position = self.store.position(KEY)
        sent = 0
        for cursor, group in groupby(self._after(position, 100), key=lambda r: r["cursor"]):
            rows = [r for r in group if r["email"]]
            try:
                with self.store.transaction() as c:
                    self.store.record_position(c, KEY, cursor)
                    self.mailer.send(self.mailer.message(r) for r in rows)
            except IntegrityError:
                log.debug("another outbox sent cursor %d", cursor)
                return sent
            sent += len(rows)
        return sent

    def _record(self, cursor: int) -> None:
        try:
            with self.store.transaction() as c:
                self.store.record_position(c, KEY, cursor)
        except IntegrityError:
            pass

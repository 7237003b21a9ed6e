"""One plain-text e-mail per alert over SMTP: STARTTLS (certificate verified) and AUTH when
configured. ``Message-ID`` is derived from the alert id, so mail tools can drop a resend."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from hub.alerting.notifiers.base import NotifierRejected
from hub.config.alerting import EmailNotifier
from schemas.errors import DeliveryError
from schemas.models import Alert


def render(alert: Alert, config: EmailNotifier) -> EmailMessage:
    where = "/".join(x for x in (alert.site, alert.device_id, alert.sensor_id) if x)
    status = "RESOLVED" if alert.status == "resolved" else alert.severity.upper()
    late = " (late: replayed/old event)" if alert.late else ""
    msg = EmailMessage()
    msg["Subject"] = f"{config.subject_prefix} {status}: {where}{late}"
    msg["From"] = config.from_addr
    msg["To"] = ", ".join(config.to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{alert.alert_id}@thermopipe>"
    msg.set_content("\n".join([
        alert.summary,
        "",
        f"Status:     {alert.status}{late}",
        f"Severity:   {alert.severity}",
        f"Rule:       {alert.rule}",
        f"Site:       {alert.site}",
        f"Device:     {alert.device_id}",
        f"Sensor:     {alert.sensor_id or '-'}",
        f"Event time: {alert.event_time.isoformat()}",
        f"Event id:   {alert.event_id}",
        f"Alert id:   {alert.alert_id}",
        f"Group:      {alert.group_key}",
        "",
        "-- thermopipe hub",
    ]))
    return msg


class EmailSender:
    def __init__(self, name: str, config: EmailNotifier) -> None:
        self.name = name
        self.config = config

    def send(self, alert: Alert) -> None:
        cfg = self.config
        message = render(alert, cfg)
        try:
            with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s) as smtp:
                if cfg.starttls:
                    context = ssl.create_default_context(
                        cafile=str(cfg.ca_file) if cfg.ca_file else None)
                    smtp.starttls(context=context)
                if cfg.username is not None and cfg.password is not None:
                    smtp.login(cfg.username, cfg.password.get_secret_value())
                refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise NotifierRejected(f"email {self.name}: every recipient refused: "
                                   f"{exc.recipients}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"email {self.name} via {cfg.host}:{cfg.port}: "
                                f"{type(exc).__name__}: {exc}") from exc
        if refused:
            raise DeliveryError(f"email {self.name}: refused for {sorted(refused)}")

    def close(self) -> None:
        """Nothing held open: one SMTP session per alert."""

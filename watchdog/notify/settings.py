"""The `notify:` section of config.yaml: where alerts go, which events, how patiently.

Who reads it: `notify.build` (channels and outbox), `notify.notify_test`, and the service (it reads
`unhealthy_after_s` and `deliver_every_s`). The config loader has already expanded `${ENV}` before these
models validate. Secrets (Slack webhook URL, bot tokens) are `SecretStr`: masked in every repr, dump and
error; the validators below never quote them.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from watchdog.notify.notice import EventKind

PositiveSeconds = Annotated[float, Field(gt=0)]

# Events a channel receives unless its `events:` list says otherwise (every real event; `test` is sent
# only by notify-test, straight to the channel).
ALL_EVENTS: tuple[EventKind, ...] = tuple(e for e in EventKind if e is not EventKind.TEST)


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: the only hosts where plain http is acceptable."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, what: str) -> str:
    """Accept https anywhere and http only on loopback (the test stand-ins); never echo the URL back.

    The message must not quote `url`: for a Slack webhook the whole URL is the secret.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        raise ValueError(f"{what} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"{what} must be an https:// URL")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ValueError(
            f"{what} uses plain http:// on a non-loopback host; use https:// "
            "(http is accepted only for 127.0.0.1, ::1 and localhost, e.g. the test stand-ins)"
        )
    return url


class _Section(BaseModel):
    # hide_input_in_errors: a validation error must never quote a token or webhook URL back.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class SlackSettings(_Section):
    """Slack by incoming webhook (no threads, no edits) or by bot token + channel (threads and edits)."""

    webhook_url: SecretStr | None = None
    bot_token: SecretStr | None = None
    channel: str | None = None  # "#alerts", or a channel id like C0123456 (needs chat:write; invite the bot)
    api_base: str = "https://slack.com/api"  # bot mode only; the webhook URL is itself the endpoint
    events: list[EventKind] | None = None  # None: every event switched on in notify.events
    timeout_s: PositiveSeconds = 10

    @field_validator("api_base")
    @classmethod
    def _api_base(cls, value: str) -> str:
        return check_base_url(value, "api_base").rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_base_url(value.get_secret_value(), "webhook_url")
        return value

    @field_validator("events")
    @classmethod
    def _no_test(cls, value: list[EventKind] | None) -> list[EventKind] | None:
        return _without_test(value)

    @model_validator(mode="after")
    def _one_mode(self) -> SlackSettings:
        if self.webhook_url is not None and self.bot_token is not None:
            raise ValueError("give either webhook_url or bot_token + channel, not both")
        if self.webhook_url is None and self.bot_token is None:
            raise ValueError("needs either webhook_url, or bot_token and channel")
        if self.bot_token is not None and not self.channel:
            raise ValueError("bot_token needs channel (e.g. '#alerts' or a channel id)")
        if self.webhook_url is not None and self.channel:
            raise ValueError("channel is only used with bot_token; a webhook posts where it was created")
        return self

    @property
    def mode(self) -> Literal["webhook", "bot"]:
        return "webhook" if self.webhook_url is not None else "bot"


class TelegramSettings(_Section):
    """A Telegram bot posting to one chat (optionally one forum topic)."""

    bot_token: SecretStr
    chat_id: str  # numeric id (groups are negative, e.g. -1001234567890) or "@channelname"
    message_thread_id: int | None = None  # forum topic
    api_base: str = "https://api.telegram.org"
    events: list[EventKind] | None = None
    timeout_s: PositiveSeconds = 10

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat_id(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("must be a numeric chat id or @channelname")
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str):
            text = value.strip()
            if text.lstrip("-").isdigit() or (text.startswith("@") and len(text) > 1):
                return text
            raise ValueError("must be a numeric chat id (e.g. -1001234567890) or @channelname")
        return value

    @field_validator("api_base")
    @classmethod
    def _api_base(cls, value: str) -> str:
        return check_base_url(value, "api_base").rstrip("/")

    @field_validator("events")
    @classmethod
    def _no_test(cls, value: list[EventKind] | None) -> list[EventKind] | None:
        return _without_test(value)


class RetrySettings(_Section):
    """Backoff between delivery attempts of one message. Retry policy is data, applied by the outbox."""

    first_delay_s: PositiveSeconds = 10
    max_delay_s: PositiveSeconds = 600
    multiplier: float = Field(default=2.0, ge=1.0)
    jitter: float = Field(default=0.2, ge=0.0, lt=1.0)  # +-20% so many watchdogs do not retry in step
    max_attempts: int = Field(default=12, ge=1)  # then the message is marked dead with a log line


def _without_test(value: list[EventKind] | None) -> list[EventKind] | None:
    if value is not None and EventKind.TEST in value:
        raise ValueError("'test' is sent by notify-test only; it cannot be routed")
    return value


class NotifySettings(_Section):
    """Where alerts go. With no chat channel configured, alerts are printed to the terminal."""

    slack: SlackSettings | None = None
    telegram: TelegramSettings | None = None
    # "auto": print alerts to the terminal only when no chat channel is configured.
    console: bool | Literal["auto"] = "auto"
    # Switch events off for every channel, e.g. {user_aborted: false, code_failed: false}.
    events: dict[EventKind, bool] = Field(default_factory=dict)
    group_wait_s: float = Field(default=30, ge=0)  # hold a new alert this long to group it with others
    max_age_s: PositiveSeconds = 3600  # undelivered alerts older than this expire (logged), never arrive late
    retry: RetrySettings = Field(default_factory=RetrySettings)
    unhealthy_after_s: PositiveSeconds = 300  # ClearML unreachable this long -> watchdog_unhealthy
    deliver_every_s: PositiveSeconds = 2  # how often the service runs a delivery pass

    @field_validator("events")
    @classmethod
    def _switchable(cls, value: dict[EventKind, bool]) -> dict[EventKind, bool]:
        if EventKind.TEST in value:
            raise ValueError("'test' cannot be switched; it is sent by notify-test only")
        return value

    @property
    def chat_configured(self) -> bool:
        return self.slack is not None or self.telegram is not None

    @property
    def console_enabled(self) -> bool:
        return self.console is True or (self.console == "auto" and not self.chat_configured)

    def secret_values(self) -> list[str]:
        """Every secret in this section, for the log masker (`watchdog.logs.register_secrets`)."""
        values: list[str] = []
        if self.slack is not None:
            values += [s.get_secret_value() for s in (self.slack.webhook_url, self.slack.bot_token) if s is not None]
        if self.telegram is not None:
            values.append(self.telegram.bot_token.get_secret_value())
        return values

    def switched_on(self, event: EventKind) -> bool:
        return self.events.get(event, True)

    def events_for(self, channel: str) -> frozenset[EventKind]:
        """The events routed to `channel` ("slack", "telegram", "console"): its list, minus switched-off ones."""
        listed: list[EventKind] | None = None
        if channel == "slack" and self.slack is not None:
            listed = self.slack.events
        elif channel == "telegram" and self.telegram is not None:
            listed = self.telegram.events
        chosen = ALL_EVENTS if listed is None else tuple(listed)
        return frozenset(e for e in chosen if self.switched_on(e))

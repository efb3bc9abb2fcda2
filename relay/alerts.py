"""Apprise targets: loading them with their tags, sending one message to one target, masking their URLs."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import apprise
from apprise.attachment.memory import AttachMemory

from relay import apprise_log
from relay.config import NotifySettings
from relay.covers import Image
from relay.errors import ConfigError
from relay.messages import Message
from relay.redact import mask_url, url_secrets

logger = logging.getLogger("relay.alerts")

#: `tag=URL` or `tag1,tag2=URL` (the form Apprise's TEXT config files use).
_TAGGED = re.compile(r"^\s*([\w, -]+?)\s*=\s*(\S+://.*)$")
ROUTES = {
    "success": {"success"},
    "failure": {"failure"},
    "warning": {"failure"},  # problems with relay itself go where failures go
    "digest": {"success", "failure"},
    "test": set(),
}
_TYPES = {
    "success": apprise.NotifyType.SUCCESS,
    "failure": apprise.NotifyType.FAILURE,
    "warning": apprise.NotifyType.WARNING,
    "info": apprise.NotifyType.INFO,
}


def split_tag(entry: str) -> tuple[set[str], str]:
    """'success=json://host' -> ({'success'}, 'json://host'); an untagged URL has no tags."""
    match = _TAGGED.match(entry)
    if not match:
        return set(), entry.strip()
    return {t.strip().lower() for t in match[1].split(",") if t.strip()}, match[2].strip()


@dataclass
class Target:
    """One Apprise service, as relay routes and reports it."""

    key: str
    masked: str
    tags: set[str]
    plugin: Any = field(repr=False)
    secrets: list[str] = field(default_factory=list, repr=False)  # what `masked` hides, to scrub from reasons

    @property
    def shows_pictures(self) -> bool:
        """Whether the service takes attachments (ntfy, Telegram, Discord, Pushover, email, json://)."""
        return bool(getattr(self.plugin, "attachment_support", False))

    def wants(self, category: str) -> bool:
        """Untagged targets get every alert; `success`/`failure` tags select."""
        routed = self.tags & {"success", "failure"}
        return not routed or category == "test" or bool(routed & ROUTES.get(category, set()))


def load_targets(settings: NotifySettings) -> tuple[list[Target], list[str]]:
    """The configured targets, and one problem line per URL or config file Apprise cannot use."""
    targets: list[Target] = []
    problems: list[str] = []
    for index, secret in enumerate(settings.urls):
        tags, url = split_tag(secret.get_secret_value())
        plugin = apprise.Apprise.instantiate(url, tag=tags or None)
        if plugin is None:
            hint = "" if "://" in url else " (a URL looks like scheme://host/…)"
            problems.append(f"notify.urls[{index}]: '{mask_url(url)}' is not a URL Apprise understands{hint}")
            continue
        targets.append(_target(plugin, url))
    if settings.config:
        config = apprise.AppriseConfig()
        if not config.add(settings.config):
            problems.append(f"notify.config: cannot read Apprise config {settings.config!r}")
        else:
            servers = config.services()
            if not servers:
                problems.append(f"notify.config: {settings.config!r} holds no URL Apprise understands")
            targets += [_target(plugin) for plugin in servers]
    return targets, problems


def _target(plugin: Any, url: str | None = None) -> Target:
    """`url` as the user wrote it; a target from an Apprise config file is shown by its URL without the query
    (Apprise spells out every default there)."""
    shown = url or plugin.url().split("?", 1)[0]
    return Target(
        key=plugin.url_id() or plugin.url(privacy=True),
        masked=mask_url(shown),
        tags={str(t).lower() for t in plugin.tags},
        plugin=plugin,
        secrets=[part for part in url_secrets(shown) if len(part) >= 5],  # shorter ones: common words too
    )


@dataclass(frozen=True)
class SendResult:
    """How one send to one target went."""

    ok: bool
    error: str | None = None
    timed_out: bool = False


class AlertSender:
    """Sends messages to targets, each call bounded by a timeout."""

    def __init__(self, targets: list[Target], timeout: float = 15.0) -> None:
        self.targets = targets
        self.timeout = timeout
        self.by_key = {t.key: t for t in targets}
        apprise_log.install()

    @classmethod
    def from_settings(cls, settings: NotifySettings) -> AlertSender:
        """Targets from `[notify]`; a URL Apprise cannot use is a configuration error."""
        targets, problems = load_targets(settings)
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(targets, settings.timeout)

    async def send(self, target: Target, message: Message, image: Image | None = None) -> SendResult:
        """Deliver `message` to `target` in a worker thread; False with the target's reason on failure or timeout.

        A picture is attached where the service shows them; if the send fails with it (too large for the
        service, say), it is tried once more without, so a picture never costs the alert.
        """
        if image is not None and target.shows_pictures:
            result = await self._send(target, message, image)
            if result.ok or result.timed_out:
                return result
        return await self._send(target, message, None)

    async def _send(self, target: Target, message: Message, image: Image | None) -> SendResult:
        markdown = target.plugin.notify_format in (apprise.NotifyFormat.MARKDOWN, apprise.NotifyFormat.HTML)
        body = message.markdown if markdown else message.text
        attach = None
        if image is not None:
            attach = apprise.AppriseAttachment()
            attach.add(AttachMemory(content=image.data, name=image.name, mimetype=image.mimetype))  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(self.timeout):
                ok, lines = await asyncio.to_thread(
                    _notify,
                    target,
                    body=body or message.title,
                    title=message.title,
                    notify_type=_TYPES.get(message.type, apprise.NotifyType.INFO),
                    body_format=apprise.NotifyFormat.MARKDOWN if markdown else apprise.NotifyFormat.TEXT,
                    attach=attach,
                )
        except TimeoutError:
            return SendResult(False, f"no answer within {self.timeout:g} s", timed_out=True)
        except Exception as exc:  # a plugin bug must not stop the outbox; the reason is kept for the user
            return SendResult(False, f"{type(exc).__name__}: {exc}")
        if ok:
            return SendResult(True)
        return SendResult(False, apprise_log.reason(lines) or "the target refused or could not be reached")


def _notify(target: Target, **kwargs: Any) -> tuple[bool, list[tuple[int, str]]]:
    """One Apprise notify, in the calling (worker) thread, with what Apprise logged meanwhile."""
    with apprise_log.capturing(target.secrets) as lines:
        ok = bool(target.plugin.notify(**kwargs))
    return ok, lines

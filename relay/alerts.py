"""Apprise targets: loading them with their tags, sending one message to one target, masking their URLs."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import apprise

from relay.config import NotifySettings
from relay.errors import ConfigError
from relay.messages import Message

logger = logging.getLogger("relay.alerts")

#: `tag=URL` or `tag1,tag2=URL` (the form Apprise's TEXT config files use).
_TAGGED = re.compile(r"^\s*([\w, -]+?)\s*=\s*(\S+://.*)$")
ROUTES = {"success": {"success"}, "failure": {"failure"}, "digest": {"success", "failure"}, "test": set()}


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
            scheme = url.split("://", 1)[0] if "://" in url else url[:12]
            problems.append(f"notify.urls[{index}]: '{scheme}://…' is not a URL Apprise understands")
            continue
        targets.append(_target(plugin))
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


def _target(plugin: Any) -> Target:
    return Target(
        key=plugin.url_id() or plugin.url(privacy=True),
        masked=plugin.url(privacy=True),
        tags={str(t).lower() for t in plugin.tags},
        plugin=plugin,
    )


@dataclass(frozen=True)
class SendResult:
    """How one send to one target went."""

    ok: bool
    error: str | None = None


class AlertSender:
    """Sends messages to targets, each call bounded by a timeout."""

    def __init__(self, targets: list[Target], timeout: float = 15.0) -> None:
        self.targets = targets
        self.timeout = timeout
        self.by_key = {t.key: t for t in targets}

    @classmethod
    def from_settings(cls, settings: NotifySettings) -> AlertSender:
        """Targets from `[notify]`; a URL Apprise cannot use is a configuration error."""
        targets, problems = load_targets(settings)
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(targets, settings.timeout)

    async def send(self, target: Target, message: Message) -> SendResult:
        """Deliver `message` to `target` in a worker thread; False with a reason on failure or timeout."""
        markdown = target.plugin.notify_format in (apprise.NotifyFormat.MARKDOWN, apprise.NotifyFormat.HTML)
        body = message.markdown if markdown else message.text
        body_format = apprise.NotifyFormat.MARKDOWN if markdown else apprise.NotifyFormat.TEXT
        try:
            async with asyncio.timeout(self.timeout):
                ok = await asyncio.to_thread(
                    target.plugin.notify,
                    body=body or message.title,
                    title=message.title,
                    body_format=body_format,
                )
        except TimeoutError:
            return SendResult(False, f"no answer within {self.timeout:g} s")
        except Exception as exc:  # a plugin bug must not stop the outbox; the reason is kept for the user
            return SendResult(False, f"{type(exc).__name__}: {exc}")
        return SendResult(True) if ok else SendResult(False, "the target refused or could not be reached")

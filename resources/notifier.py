"""Webhook notifications of release state changes, in Slack-compatible JSON.

`{"text": ..., "blocks": [...]}` is what Slack incoming webhooks, Mattermost and most chat
bridges accept. Posting never raises and never takes longer than its deadline: short per-try
timeouts, a few retries with exponential backoff, errors logged, so a receiver that is down or
hangs cannot block or fail a rollback. `post_in_background` does not even wait for that.

Plain Python (httpx); no Dagster. Configure with RELEASE_WEBHOOK_URL, or construct directly.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

ENV_VAR = "RELEASE_WEBHOOK_URL"
log = logging.getLogger(__name__)


def redact(url: str) -> str:
    """scheme://host:port/... only: webhook URLs carry their secret in the path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}/..."


STATE_ICONS = {
    "planned": ":memo:",
    "preflight": ":mag:",
    "expanding": ":building_construction:",
    "canary": ":hatching_chick:",
    "promoting": ":arrow_up:",
    "baking": ":bread:",
    "contracting": ":scissors:",
    "completed": ":white_check_mark:",
    "rolling_back": ":rewind:",
    "rolled_back": ":leftwards_arrow_with_hook:",
    "failed": ":rotating_light:",
}


def state_change_message(
    release_id: str,
    product: str,
    state: str,
    actor: str,
    previous_state: str | None = None,
    details: Mapping[str, Any] | None = None,
    link: str | None = None,
) -> dict[str, Any]:
    """A Slack-compatible message for one state change: `text` as fallback, `blocks` for layout."""
    icon = STATE_ICONS.get(state, ":information_source:")
    moved = f"{previous_state} -> {state}" if previous_state else state
    text = f"{icon} {product} release {release_id}: {moved} (by {actor})"
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in (details or {}).items() if v not in (None, "")]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{product}* release `{release_id}`\n*{moved}* by {actor}"}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields[:10]})  # Slack allows 10 fields
    if link:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{link}|open in Dagster>"}]})
    return {"text": text, "blocks": blocks}


@dataclass
class WebhookNotifier:
    """POST JSON to one webhook URL; `notify` returns True when the receiver took it (2xx)."""

    url: str
    timeout_seconds: float = 2.0
    retries: int = 2
    backoff_seconds: float = 0.25
    deadline_seconds: float = 6.0
    on_error: Callable[[str], None] | None = None
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)

    @classmethod
    def from_env(cls) -> WebhookNotifier | None:
        """A notifier for RELEASE_WEBHOOK_URL, or None when it is not set."""
        url = os.environ.get(ENV_VAR, "").strip()
        return cls(url) if url else None

    def notify(self, message: Mapping[str, Any]) -> bool:
        """Post with retries and backoff, within `deadline_seconds`; never raises."""
        try:
            return self._post(dict(message))
        except Exception as exc:  # noqa: BLE001 - a notification must never break a release
            self._report(f"notification to {redact(self.url)} failed: {type(exc).__name__}: {exc}")
            return False

    def post_in_background(self, message: Mapping[str, Any]) -> threading.Thread:
        """Post from a daemon thread and return at once; `flush` waits for pending posts."""
        thread = threading.Thread(target=self.notify, args=(dict(message),), daemon=True,
                                  name="release-webhook")
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def flush(self, timeout_seconds: float | None = None) -> None:
        """Wait (at most the deadline) for background posts, e.g. before a process exits."""
        limit = self.deadline_seconds if timeout_seconds is None else timeout_seconds
        end = time.monotonic() + limit
        for thread in list(self._threads):
            thread.join(max(0.0, end - time.monotonic()))

    def _post(self, message: dict[str, Any]) -> bool:
        end = time.monotonic() + self.deadline_seconds
        problem = "not tried"
        for attempt in range(self.retries + 1):
            left = end - time.monotonic()
            if left <= 0:
                problem += " (deadline reached)"
                break
            try:
                response = httpx.post(self.url, json=message, timeout=min(self.timeout_seconds, left))
                if 200 <= response.status_code < 300:
                    return True
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    break  # the receiver refuses this message; retrying will not help
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt < self.retries:
                time.sleep(max(0.0, min(self.backoff_seconds * 2**attempt, end - time.monotonic())))
        self._report(f"notification to {redact(self.url)} not delivered after {attempt + 1} tries: {problem}")
        return False

    def _report(self, text: str) -> None:
        log.warning(text)
        if self.on_error is not None:
            try:
                self.on_error(text)
            except Exception:
                log.exception("notifier error callback failed")

"""The webhook notifier against real HTTP receivers on 127.0.0.1: up, flaky, down, hanging."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from release_pipelines.resources.notifier import WebhookNotifier, state_change_message


class Receiver:
    """A tiny webhook receiver: records bodies; answers `statuses` in turn (then 200); may hang."""

    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0):
        self.bodies: list[dict] = []
        self.statuses = list(statuses or [])
        self.delay = delay
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.bodies.append(body)
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"busy")

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # the client gave up on a hanging receiver: expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secret"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


MESSAGE = state_change_message("shop-20261126T100000-ab12", "shop", "rolling_back", "canary-sensor", "canary",
                               {"reason": "canary failed: error rate 5.1 % vs 0.4 %"}, link="http://dagster/runs/1")


@pytest.fixture
def errors() -> Iterator[list[str]]:
    yield []


def test_message_is_slack_compatible() -> None:
    assert MESSAGE["text"].startswith(":rewind: shop release shop-20261126T100000-ab12: canary -> rolling_back")
    kinds = [b["type"] for b in MESSAGE["blocks"]]
    assert kinds == ["section", "section", "context"]
    assert MESSAGE["blocks"][1]["fields"][0]["text"].startswith("*reason*")
    json.dumps(MESSAGE)  # plain JSON


def test_delivered_to_a_live_receiver() -> None:
    with Receiver() as receiver:
        assert WebhookNotifier(receiver.url).notify(MESSAGE) is True
    assert receiver.bodies == [MESSAGE]


def test_retries_with_backoff_until_accepted(errors: list[str]) -> None:
    with Receiver(statuses=[503, 500]) as receiver:
        notifier = WebhookNotifier(receiver.url, retries=3, backoff_seconds=0.05, on_error=errors.append)
        assert notifier.notify(MESSAGE) is True
    assert len(receiver.bodies) == 3 and errors == []


def test_client_error_is_not_retried(errors: list[str]) -> None:
    with Receiver(statuses=[400]) as receiver:
        assert WebhookNotifier(receiver.url, retries=3, on_error=errors.append).notify(MESSAGE) is False
    assert len(receiver.bodies) == 1
    assert "HTTP 400" in errors[0] and "secret" not in errors[0]  # the URL's secret path is not logged


def test_receiver_down_is_logged_not_raised(errors: list[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notifier = WebhookNotifier(f"http://127.0.0.1:{port}/hook", retries=2, backoff_seconds=0.05,
                               on_error=errors.append)
    began = time.monotonic()
    assert notifier.notify(MESSAGE) is False
    assert time.monotonic() - began < 2
    assert "not delivered after 3 tries" in errors[0] and "ConnectError" in errors[0]


def test_hanging_receiver_is_cut_off_by_timeout_and_deadline(errors: list[str]) -> None:
    with Receiver(delay=3.0) as receiver:
        notifier = WebhookNotifier(receiver.url, timeout_seconds=0.3, retries=5, backoff_seconds=0.05,
                                   deadline_seconds=1.0, on_error=errors.append)
        began = time.monotonic()
        assert notifier.notify(MESSAGE) is False
        took = time.monotonic() - began
    assert took < 1.5, took
    assert "Timeout" in errors[0]


def test_background_post_returns_at_once() -> None:
    with Receiver(delay=0.5) as receiver:
        notifier = WebhookNotifier(receiver.url)
        began = time.monotonic()
        notifier.post_in_background(MESSAGE)
        assert time.monotonic() - began < 0.1
        notifier.flush()
    assert receiver.bodies == [MESSAGE]


def test_unexpected_errors_never_escape(errors: list[str]) -> None:
    notifier = WebhookNotifier("not a url at all", on_error=errors.append)
    assert notifier.notify(MESSAGE) is False
    assert errors

"""What every `release` command shares: the consoles, error-to-exit-code mapping, opening the
ledger and a product, and the one parser of `SERVICE=VERSION`.

Exit codes: 0 ok, 1 a finding or refusal (the command ran and says no), 2 bad input (a message
naming the field or thing, never a traceback).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from release_pipelines.core.errors import ReleaseError
from release_pipelines.core.product import Product
from release_pipelines.resources import settings
from release_pipelines.resources.ledger import Ledger
from release_pipelines.resources.manifest_files import load_products

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    # escape: a message quoting a pattern such as ^[a-z][a-z0-9_-]$ is not markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def user_errors(func: F) -> F:
    """The project's own errors become a red message and exit code 2."""
    return _exiting_clearly(func, (ReleaseError,))


def clear_errors(func: F) -> F:
    """For commands that talk to other processes: anything unexpected is one red line too."""
    return _exiting_clearly(func, (Exception,))


def _exiting_clearly(func: F, caught: tuple[type[Exception], ...]) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except caught as exc:
            fail(str(exc) if isinstance(exc, ReleaseError) else f"{type(exc).__name__}: {exc}")

    return wrapper  # type: ignore[return-value]


def parse_assignments(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    """`svc=1.2.3` pairs into a dict, refusing malformed ones by name."""
    result: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise ReleaseError(f"{option} {pair!r}: expected SERVICE=VERSION, e.g. {option} orders=1.4.0")
        if name in result:
            raise ReleaseError(f"{option}: service {name!r} given twice")
        result[name] = value
    return result


def open_ledger() -> Ledger:
    """The ledger at RELEASE_LEDGER_URL, else the SQLite default under RELEASE_HOME."""
    return Ledger(settings.ledger_url())


def product_named(name: str, manifests: Path | None) -> Product:
    """The product called `name` from --manifest(s), else from RELEASE_MANIFESTS."""
    location = manifests or settings.manifests_location()
    for product in load_products(location):
        if product.name == name:
            return product
    raise ReleaseError(f"no manifest for product {name!r} under {location}; "
                       "pass --manifest FILE or set RELEASE_MANIFESTS")


manifest_option = click.option(
    "--manifest", type=click.Path(path_type=Path), default=None,
    help="manifest file or folder; default: RELEASE_MANIFESTS or the example",
)

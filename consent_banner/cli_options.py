"""Options the `consent-banner` commands share, spelled once (the top-level commands, `log ...`, `scan`).

Imports only click: `cli.py` imports the `log` and `scan` command groups, so they cannot import it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

DEFAULT_CONFIG = Path("consent.toml")
FC = TypeVar("FC", bound=Callable[..., object])


def config_option(help_text: str) -> Callable[[FC], FC]:
    """`--config PATH` (default ./consent.toml), passed to the command as `config_path`."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_CONFIG,
        show_default=True,
        help=help_text,
    )

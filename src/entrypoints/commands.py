"""What every ``reportsvc`` command shares: its exit codes, its one-line failure, and its
settings read with logging set up."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .settings import Settings, load_settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # configuration errors and invalid arguments, as argparse does
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl+C
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Failure(Exception):
    """A command could not do its work; printed as one ``reportsvc: ...`` line."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def settings_for(env: Mapping[str, str], required: Sequence[str]) -> Settings:
    """The settings a command needs (``required``), logging set up as they say."""
    from .runtime.logs import setup_logging

    settings = load_settings(env, required=required)
    setup_logging(settings)
    return settings

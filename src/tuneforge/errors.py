"""Errors a user can fix. The CLI turns them into one clear message and exit code 2."""

from __future__ import annotations


class TuneforgeError(Exception):
    """Bad input (file, config, request): the message says what is wrong and what to do."""

    exit_code = 2


class ConfigError(TuneforgeError):
    """A config file or a `key=value` override is invalid."""

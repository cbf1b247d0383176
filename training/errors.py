"""The errors a user's data or configuration can cause, each said in one line that names the file or field."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset folder or file that cannot be read as one: the message names the file and what was expected."""


class ConfigError(ValueError):
    """A training configuration that does not validate; the message names each bad field and what it expects."""

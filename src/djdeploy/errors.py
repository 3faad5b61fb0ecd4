"""The one domain exception type; the CLI turns it into an exit code at the edge."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes shared by every command that changes hosts."""

    OK = 0  # every host applied or already up to date
    ERROR = 1  # anything else
    REFUSED = 2  # refused before any host changed (bad input, validation failed)
    ROLLED_BACK = 3  # a change failed and was rolled back; hosts serve their last-known-good
    NEEDS_PERSON = 4  # a host is left unhealthy or unreachable


class DjdeployError(Exception):
    """An error a user can act on: the message names the culprit and, where known, the fix."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.REFUSED, *, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.fix = fix

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


def type_name(value: object) -> str:
    """The built-in type a value is, as users wrote it: Ansible hands over str and int subclasses
    (e.g. _AnsibleTaggedStr) whose names mean nothing to whoever wrote the YAML."""
    builtin = next((base for base in type(value).__mro__ if base.__module__ == "builtins" and base is not object), None)
    return (builtin or type(value)).__name__

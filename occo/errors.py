"""One exception hierarchy for everything a user can get wrong or run into.

Every user-facing error carries the exit code its command ends with and a message that says
what to fix.  The command-line layer prints ``str(error)`` on one line and exits with
``error.exit_code``; nothing below the CLI prints or exits.
"""
from __future__ import annotations

from typing import Any, Optional

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class OccoError(Exception):
    """Base of every error Occopus reports to a user."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, *, source: Optional[str] = None,
                 line: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line

    def where(self) -> str:
        """``file:line`` (or ``file``) of the offending input, or '' if unknown."""
        if not self.source:
            return ''
        return f'{self.source}:{self.line}' if self.line else str(self.source)

    def __str__(self) -> str:
        where = self.where()
        return f'{where}: {self.message}' if where else self.message


class UsageError(OccoError):
    """The command line itself is wrong (argparse-style exit code 2)."""
    exit_code = EXIT_USAGE


class NotImplementedYet(OccoError):
    """A command or feature that a later release implements; never pretends to work."""
    exit_code = EXIT_USAGE


class ConfigError(OccoError):
    """A configuration or authentication-data file is missing or wrong."""


class AuthError(ConfigError):
    """Credentials cannot be determined for a resource or config manager."""


class DescriptionError(OccoError):
    """An infrastructure description or node definition file cannot be loaded or is invalid."""


class YAMLFileError(DescriptionError):
    """A file is not readable, not valid YAML, or uses a tag we refuse to construct."""


class SchemaError(DescriptionError):
    """A loaded description breaks the schema (unknown/missing keys, wrong types, cycles...)."""


class CompileError(DescriptionError):
    """A valid description cannot be compiled against the imported node definitions."""


class StoreError(OccoError):
    """Redis is unreachable or answered something unexpected."""


class LeaseHeld(OccoError):
    """Another process is changing the infrastructure right now."""

    def __init__(self, infra_id: str, holder: str, since: float, left: float, token: str = '',
                 namespace: str = '') -> None:
        import time
        ago = max(0, time.time() - since) if since else 0
        super().__init__(f'infrastructure {infra_id} is being changed by {holder} (for {ago:.0f} s; '
                         f'its lease runs out in {left:.0f} s unless renewed)')
        self.infra_id, self.holder, self.since, self.left = infra_id, holder, since, left
        self.token, self.namespace = token, namespace


class LeaseLost(OccoError):
    """Our lease on an infrastructure expired or was taken over: we must stop writing."""


class UnknownInfrastructure(OccoError):
    """No infrastructure has the given id (any more)."""

    def __init__(self, infra_id: str, note: str = 'occopus-manage -l lists the known ones') -> None:
        super().__init__(f'Unknown infrastructure: "{infra_id}" ({note})')
        self.infra_id = infra_id
        self.infra_id = infra_id


class UnknownNode(OccoError):
    """An infrastructure has no node of the given name."""


class CloudError(OccoError):
    """A cloud refused or failed a call; trying the same call again will not help."""


class TransientCloudError(CloudError):
    """A cloud call failed in a way that may pass (throttling, a 5xx answer, a reset
    connection, a time-out): the engine retries it with backoff within the node's deadline.

    ``unsent`` says that the request never reached the cloud (a refused connection, a name
    that does not resolve, a missing socket): a create that failed so made nothing.  Leave it
    false whenever the cloud may have acted (a time-out or a lost answer after sending)."""

    def __init__(self, message: str, *, unsent: bool = False, **where: Any) -> None:
        super().__init__(message, **where)
        self.unsent = unsent


class CallTimeout(CloudError):
    """A cloud call did not return within its limit; the engine stopped waiting for it."""


class TemplateError(OccoError):
    """A template cannot be rendered (syntax error, refused helper, sandbox violation)."""


class BuildError(OccoError):
    """Node instances could not be created or made ready (each failure names its node)."""

    def __init__(self, failures: list, note: str = '', ready: list = ()) -> None:
        first = failures[0]
        more = f' (and {len(failures) - 1} more failure(s))' if len(failures) > 1 else ''
        super().__init__(f'{first}{more}' + (f'; {note}' if note else ''))
        self.failures = failures
        #: what did become ready meanwhile (a pass keeps it)
        self.ready = list(ready)


class Conflict(OccoError):
    """The request clashes with the infrastructure's state (attach of a maintained one...)."""


class BuildCancelled(OccoError):
    """A build was told to stop (a REST ``DELETE`` during it): it rolled back."""


class TeardownError(OccoError):
    """Some resources could not be dropped; they are still recorded so that a later
    ``occopus-destroy`` can try again."""


def describe_error(exc: BaseException) -> str:
    """A one-line reason for an exception raised by a plugin, a template or a check."""
    if isinstance(exc, OccoError):
        return exc.message if not exc.where() else str(exc)
    return f'{type(exc).__name__}: {exc}'.replace('\n', ' ')

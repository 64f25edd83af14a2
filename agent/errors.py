"""The agent's exception tree. Every message names the thing, the cause and the remedy.

    SplitwatchAgentError            base: catch this to handle any expected agent failure
     ├── ParseError                 kernel or log text that does not have the expected shape
     ├── ConfigError                bad command line or settings (agent, import)
     ├── SpoolError                 the on-disk spool cannot be written or read
     └── TransportError             the backend could not be reached or refused a batch

Sources never raise these (they return typed results with a status); the pure parsers under
agent/kernel/ raise ParseError, and the CLI turns any of them into one sentence and exit 1.
"""

from __future__ import annotations


class SplitwatchAgentError(Exception):
    """Base of every expected agent failure."""


class ParseError(SplitwatchAgentError, ValueError):
    """Text that does not have the shape the kernel prints. Never raised for text that is simply
    not ours (a parser answers None for that)."""


class ConfigError(SplitwatchAgentError):
    """A setting or argument that cannot work."""


class SpoolError(SplitwatchAgentError):
    """The spool directory cannot hold or give back records."""


class TransportError(SplitwatchAgentError):
    """The backend did not take a batch."""

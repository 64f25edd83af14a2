"""splitwatch host agent: reads a host's split-lock signals under a root directory.

Imports only the standard library and httpx: it ships to every host.
"""

__version__ = "0.1.0"

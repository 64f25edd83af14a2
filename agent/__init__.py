"""splitwatch host agent: reads a host's split-lock signals under a root directory.

Imports only the standard library: it ships to every host, down to Python 3.9 (issue 17).
"""

__version__ = "0.1.0"

"""Hearth: a home Bitcoin and Lightning back end on a Raspberry Pi.

One subpackage per service (``node``, ``chain``, ``indexer``, ``electrum``,
``transport``, ``tower``, ``backup``, ``devices``); ``cli`` is the ``appliance``
command; ``config`` is the one declared configuration spec.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"

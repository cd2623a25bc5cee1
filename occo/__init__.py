"""Occopus: a hybrid-cloud orchestrator.  See ``occo.api`` for the Python interface."""

__version__ = '2.0.0.dev0'

"""Contextualisation types: registered under ``occo.contexts``."""

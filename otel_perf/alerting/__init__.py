"""Findings become alerts here: the router decides, the sinks deliver."""

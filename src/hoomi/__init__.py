"""Hoomi Realtime: a spec-first, real-time messaging server on Trio."""

__version__ = "0.1.0"

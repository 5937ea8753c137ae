"""Command-line entry points: ``hoomi`` and ``hoomi-conformance``."""

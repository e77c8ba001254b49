"""The package version: the one place it is written (pyproject.toml and the bundle metadata read it)."""

__version__ = "0.2.0"

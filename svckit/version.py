"""The version of svckit."""

__version__ = "0.1.0"

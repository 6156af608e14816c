"""Fogline: edge stream analytics for IoT."""

__version__ = "0.1.0"

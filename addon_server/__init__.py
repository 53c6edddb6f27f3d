"""Vigil add-on server: object detection, model zoo and LLM risk reasoning over HTTP."""

__version__ = "0.1.0"

"""Persistent storage of alerts and runs."""

from iotwarden.store.sqlite import AlertStore

__all__ = ["AlertStore"]

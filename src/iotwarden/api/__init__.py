"""The REST API and analyst console: ``iotwarden serve`` and ``iotwarden token``.

:func:`create_app` builds the FastAPI app for one store.
:class:`~iotwarden.api.history.ObservationRecorder` records thinned
observations with baseline bands for the console's device charts.
"""

from iotwarden.api.history import ObservationRecorder, baseline_bands

__all__ = ["ObservationRecorder", "baseline_bands", "create_app"]


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Build the FastAPI app; see :func:`iotwarden.api.app.create_app`."""
    from iotwarden.api.app import create_app as build

    return build(*args, **kwargs)

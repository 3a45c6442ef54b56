"""The package's exception tree.

The command line catches :class:`IotwardenError` once and prints its message
on one line; everything raised on purpose inside the package derives from it.
"""


class IotwardenError(Exception):
    """Base class of every error that iotwarden raises on purpose."""


class InvalidConfigError(IotwardenError, ValueError):
    """A setting, option or configuration file is invalid.

    The message names the setting, the allowed values and the value received.
    """


class InvalidRecordError(IotwardenError, ValueError):
    """One input record cannot be turned into an observation.

    Readers catch it per record, turn it into a
    :class:`~iotwarden.observation.Rejection` and go on with the stream.
    """

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class StoreError(IotwardenError):
    """The alert store cannot be opened, read or written."""

"""Every error restorekit raises on purpose derives from :class:`RestorekitError`.

Each message says what went wrong *and* what to do next (the valid names, the command that
fetches a missing file, the flag that allows an overwrite).
"""

from __future__ import annotations


class RestorekitError(Exception):
    """Base class of all restorekit errors."""


class UnknownModelError(RestorekitError, KeyError):
    """A model, architecture or tag name that the registry does not know."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class WeightsError(RestorekitError):
    """Weights could not be found, fetched, verified or read."""


class ChecksumError(WeightsError):
    """A weight file's bytes do not match the digest pinned in its record."""


class WeightsNotAvailableError(WeightsError):
    """No source could provide the weights (offline, unpublished, or every download failed)."""


class ConversionError(WeightsError):
    """A foreign checkpoint could not be mapped onto a restorekit network."""


class InputError(RestorekitError, ValueError):
    """An input image or array that restorekit cannot use."""


class DeviceError(RestorekitError, ValueError):
    """A device that is not present on this machine, or cannot hold data (the meta device)."""


class OutputError(RestorekitError, OSError):
    """An output could not be written: a full disk, a read-only folder, missing permissions."""


class OutputExistsError(RestorekitError, FileExistsError):
    """Refusing to overwrite an existing file (pass ``overwrite=True`` / ``--overwrite``)."""

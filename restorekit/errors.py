"""Every error restorekit raises on purpose derives from :class:`RestorekitError`.

Each message says what went wrong *and* what to do next (the valid names, the command that
fetches a missing file, the flag that allows an overwrite).

Both commands, ``restorekit`` and ``restorekit-train``, end with the same exit codes (:func:`run_command`):
:data:`EXIT_OK` 0, :data:`EXIT_ERROR` 1 (a :class:`RestorekitError`, a rejected argument value, a file system
error: one ``PROG: error: MESSAGE`` line on stderr, no traceback), :data:`EXIT_USAGE` 2 (argparse's usage
errors) and :data:`EXIT_INTERRUPTED` 130 (Ctrl-C).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # what argparse exits with on a bad command line
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C


class RestorekitError(Exception):
    """Base class of all restorekit errors."""


# What one image's restoration can fail with and a run over many images reports for that image alone, going on with
# the others: restorekit's own errors, a file that cannot be read or written, a value the decoder or network rejects.
PER_IMAGE_ERRORS: tuple[type[BaseException], ...] = (RestorekitError, OSError, ValueError)


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


def run_command(prog: str, command: Callable[[], int | None], *, interrupted: str = "") -> int:
    """Run one CLI verb and turn what it raises into an exit code and one line on stderr.

    ``command()`` returns its own exit code (``None`` is :data:`EXIT_OK`). A :class:`RestorekitError`, a
    ``ValueError`` (the library's argument checks) or an ``OSError`` (the file system's own complaints) print
    ``PROG: error: MESSAGE`` and give :data:`EXIT_ERROR`; Ctrl-C prints ``PROG: interrupted`` (then
    ``; {interrupted}``, what is kept) and gives :data:`EXIT_INTERRUPTED`.
    """
    try:
        return int(command() or EXIT_OK)
    except (RestorekitError, OSError, ValueError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted" + (f"; {interrupted}" if interrupted else ""), file=sys.stderr)
        return EXIT_INTERRUPTED

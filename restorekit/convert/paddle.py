"""Read PaddlePaddle ``.pdparams`` files (``paddle.save`` of a state dict) without Paddle.

A ``.pdparams`` file is a pickle of a dict whose values are numpy arrays (``paddle.save`` turns every
tensor into one), plus a ``"StructuredToParameterName@@"`` table of Paddle's internal parameter names.
Pickle can run arbitrary code, so this reader's unpickler resolves only what such a file needs: numpy's
array reconstruction, ``numpy.ndarray``, ``numpy.dtype`` and numpy scalars, ``collections.OrderedDict``
and ``_codecs.encode`` (how protocol 2 stores bytes). Anything else is refused when the pickle names it,
before it could be called. Key names are returned as they are (Paddle's PReLU parameter is ``_weight``;
the architecture's ``filter_checkpoint`` maps it).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ConversionError

__all__ = ["read_pdparams"]

_NAME_TABLE = "StructuredToParameterName@@"  # paddle.save's map from our key names to Paddle's internal ones


def _allowed() -> dict[tuple[str, str], Any]:
    import codecs
    import collections

    import numpy as np

    try:  # numpy >= 2 keeps the implementation in numpy._core; files written by numpy 1 name numpy.core
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): codecs.encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = multiarray._reconstruct
        table[(module, "scalar")] = multiarray.scalar
    return table


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers and nothing else."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self._path = path
        self._table = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._table[(module, name)]
        except KeyError:
            raise ConversionError(
                f"{self._path}: refused for safety. A .pdparams file holds numpy arrays and plain containers, "
                f"but this pickle asks for {module}.{name}, which restorekit will not load (unpickling it could "
                "run code). If you trust the file, load it with Paddle and save just the state dict "
                "(paddle.save(layer.state_dict(), path)), or export the arrays with numpy.savez."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise ConversionError(f"{self._path}: refused: the pickle uses persistent ids, which a .pdparams never has")


def _to_tensors(obj: Any, path: Path, where: str = "") -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray | np.generic):
        arr = np.asarray(obj)
        if arr.dtype.kind not in "biuf":
            raise ConversionError(f"{path}: entry {where or '<root>'} is a {arr.dtype} array, not numbers")
        return torch.from_numpy(np.ascontiguousarray(arr).copy())
    if isinstance(obj, Mapping):
        return {
            k: _to_tensors(v, path, f"{where}.{k}" if where else str(k)) for k, v in obj.items() if k != _NAME_TABLE
        }
    return obj


def read_pdparams(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.pdparams`` file as ``{key: tensor}``, refusing any pickle that needs more than numpy.

    A file holding one nested state dict (``{"generator": {...}}``, as PaddleGAN's training checkpoints)
    is returned as that state dict.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, path).load()
    except ConversionError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ConversionError(f"{path}: not a readable .pdparams file ({type(exc).__name__}: {exc})") from exc
    except OSError as exc:
        raise ConversionError(f"could not read {path}: {exc}") from exc
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a Paddle state dict")
    state = _to_tensors(obj, path)
    # Unwrap {"generator": {...}}-style files: no tensors at the top, one mapping inside.
    while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        inner = [v for v in state.values() if isinstance(v, Mapping)]
        if len(inner) != 1:
            break
        state = inner[0]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConversionError(f"{path} contains no arrays: it is not a Paddle state dict")
    others = [k for k in state if k not in tensors]
    if others:
        raise ConversionError(
            f"{path}: entries {', '.join(map(str, others[:5]))} are not arrays; expected a flat Paddle state dict"
        )
    return tensors

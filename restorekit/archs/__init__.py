"""Network architectures. Importing this package registers every architecture and its weights.

One file per network: the building blocks, the network, its checkpoint remapping and the table of
its pretrained weights, top to bottom.
"""

from . import (
    dsrir,  # noqa: F401
    mprnet,  # noqa: F401
    msrn,  # noqa: F401
)

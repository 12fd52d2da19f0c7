"""Network architectures. Importing this package registers every architecture and its weights.

One file per network: the building blocks, the network, its checkpoint remapping and the table of
its pretrained weights, top to bottom.
"""

from . import (  # noqa: F401  (each module registers its architecture and weights)
    dsrir,
    memnet,
    mprnet,
    msrn,
    spatial_rnn,
)

"""A Python service as a node of an OpenSIPS cluster (OpenSIPS 3.3 to 4.0's ``clusterer``).

:mod:`binif.cluster.packets` holds the clusterer's packets as typed values and
the registry that turns sync chunks into typed messages;
:mod:`binif.cluster.core` is the sans-I/O state machine (packets and the clock
in, packets and events out); :mod:`binif.cluster.node` is :class:`Node`, the
asyncio shell on a :class:`~binif.stream.StreamEndpoint`.
"""

from __future__ import annotations

from .core import (
    ClusterConfig,
    ClusterCore,
    NodeState,
    NodeView,
    RefusalReason,
)
from .node import Node, NodeNotUp, NodeStats, NoSyncDonor, SyncResult
from .packets import SYNC_CHUNKS, SyncChunkRegistry

__all__ = [
    "SYNC_CHUNKS",
    "ClusterConfig",
    "ClusterCore",
    "NoSyncDonor",
    "Node",
    "NodeNotUp",
    "NodeState",
    "NodeStats",
    "NodeView",
    "RefusalReason",
    "SyncChunkRegistry",
    "SyncResult",
]

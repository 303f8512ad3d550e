"""RTP port pool.

Ports are handed out least-recently-used first, so a port freed by a call that just ended is the last
one reused: stray packets still in flight towards it then reach no new call. Only even ports are used
(RTP convention: the odd neighbour belongs to RTCP).
"""

from __future__ import annotations

from collections import deque


class PortPoolExhausted(RuntimeError):
    """No free RTP port: the connector answers the call with 503."""


class PortPool:
    def __init__(self, first: int, last: int) -> None:
        if not 1024 <= first <= last <= 65535:
            raise ValueError(f"RTP port range {first}-{last} is invalid (must lie within 1024-65535)")
        start = first + (first % 2)
        self._free: deque[int] = deque(range(start, last + 1, 2))
        self._in_use: set[int] = set()
        self.size = len(self._free)
        if self.size == 0:
            raise ValueError(f"RTP port range {first}-{last} holds no even port")

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def acquire(self) -> int:
        if not self._free:
            raise PortPoolExhausted(f"all {self.size} RTP ports are in use")
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        # Releasing twice would put the port in the free list twice and hand it to two calls at once.
        if port not in self._in_use:
            raise ValueError(f"RTP port {port} is not in use")
        self._in_use.remove(port)
        self._free.append(port)

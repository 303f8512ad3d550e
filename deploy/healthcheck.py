"""Container health check for the connector: GET /healthz on the node's own ops HTTP port.

Docker's HEALTHCHECK runs it inside the avc container (`python /usr/local/bin/avc-healthcheck`); the
slim runtime image has no curl, and the standard library is enough. It reads the same AVC_HTTP_HOST and
AVC_HTTP_PORT the connector binds, so a node bound to its pod or container address is still reached.
Exit status 0 means healthy, 1 unhealthy (Docker's convention); one line on stderr says why.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Final

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = "9090"
TIMEOUT_S: Final = 2.0
# A wildcard bind answers on loopback too; connecting to the wildcard address itself is not portable.
_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::"})


def healthz_url(environ: Mapping[str, str]) -> str:
    """The /healthz URL of the connector configured by `environ`."""
    host = environ.get("AVC_HTTP_HOST", DEFAULT_HOST).strip()
    if host in _WILDCARDS:
        host = DEFAULT_HOST
    if ":" in host:
        host = f"[{host}]"
    port = environ.get("AVC_HTTP_PORT", DEFAULT_PORT).strip() or DEFAULT_PORT
    return f"http://{host}:{port}/healthz"


def check(url: str, timeout: float = TIMEOUT_S) -> str | None:
    """None when `url` answers 200, else the reason it is unhealthy."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} unreachable: {exc}"
    return None if status == 200 else f"{url} answered HTTP {status}"


def main(environ: Mapping[str, str] | None = None) -> int:
    problem = check(healthz_url(os.environ if environ is None else environ))
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The image's HEALTHCHECK: exit 0 when the service in this container answers /livez.

Kubernetes ignores HEALTHCHECK and probes /livez and /readyz itself (see the Helm
chart); this is for podman and docker. Standard library only, so it starts fast.
MAILINTAKE_HEALTHCHECK_URL overrides the address (the image makes every service
listen on port 8080).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8080/livez"


def main() -> int:
    url = os.environ.get("MAILINTAKE_HEALTHCHECK_URL", DEFAULT_URL)
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as error:
        print(f"{url}: {error.code} {error.read().decode(errors='replace').strip()}", file=sys.stderr)
    except OSError as error:
        print(f"{url}: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

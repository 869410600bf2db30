"""``python -m integrations.sandbox [--port 8765] [--config FILE] [--host 127.0.0.1]``."""

from __future__ import annotations

import sys

from integrations.sandbox.server import main

if __name__ == "__main__":
    sys.exit(main())

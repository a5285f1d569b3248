"""moto's S3 server on a given port, quiet (no access log line per request), until SIGTERM.

Usage: `python -m bench.procs.s3_server PORT`.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from moto.server import ThreadedMotoServer


def main(argv: list[str]) -> int:
    port = int(argv[0])
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the access log costs CPU on every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

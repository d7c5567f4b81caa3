"""The embedded default's mail sink: aiosmtpd writing a Maildir, dying with the hub.

The hub starts it as a managed service. If the hub is killed (SIGKILL), a plain aiosmtpd would
keep its port, and every later hub's sink would fail to bind it; so the sink asks the kernel to
stop it when its parent dies, and also checks its parent itself (the kernel's signal follows the
parent thread that started it).

Usage: python -m neurolibre_service.mailsink HOST:PORT MAILDIR
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: python -m neurolibre_service.mailsink HOST:PORT MAILDIR")
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent or parent == 1:
        sys.exit("the mail sink's parent is gone")
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    from aiosmtpd.main import main as aiosmtpd_main

    aiosmtpd_main(["-n", "-l", argv[0], "-c", "aiosmtpd.handlers.Mailbox", argv[1]])


if __name__ == "__main__":
    main(sys.argv[1:])

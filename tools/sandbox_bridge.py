"""A way out of the sandbox's empty network to a few local ports, and nowhere else.

The bubblewrap sandbox has a network namespace of its own: no route anywhere, not even to the
host's loopback. An eval episode's shell may still need its own local web app (``curl
{server_url}``). :class:`LoopbackBridge` listens on one Unix socket per allowed port in a private
folder that is bound into the sandbox; inside, ``_sandbox_relay.py`` listens on 127.0.0.1:PORT and
relays each connection to that socket. Only the listed ports on the host's 127.0.0.1 are
reachable; every other address stays unreachable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import weakref
from pathlib import Path

__all__ = ["LoopbackBridge", "RELAY_SCRIPT"]

RELAY_SCRIPT = Path(__file__).with_name("_sandbox_relay.py")


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                sock.shutdown(how)


def _accept_loop(listener: socket.socket, port: int) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # closed
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
            upstream.settimeout(None)
        except OSError:
            conn.close()
            continue
        threading.Thread(target=_pump, args=(conn, upstream), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, conn), daemon=True).start()


class LoopbackBridge:
    """Host side: Unix sockets ``folder/PORT`` that connect to 127.0.0.1:PORT on the host."""

    def __init__(self, ports: tuple[int, ...]) -> None:
        self.ports = tuple(sorted(set(ports)))
        self.folder = Path(tempfile.mkdtemp(prefix="omni-sandbox-net-"))
        self._listeners: list[socket.socket] = []
        for port in self.ports:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(self.folder / str(port)))
            listener.listen(64)
            self._listeners.append(listener)
            threading.Thread(target=_accept_loop, args=(listener, port), daemon=True, name=f"sandbox-net-{port}").start()
        self._finalizer = weakref.finalize(self, LoopbackBridge._cleanup, list(self._listeners), self.folder)

    def wrap(self, argv: list[str], *, python: str | None = None) -> list[str]:
        """``argv`` run under the in-sandbox relay (listening on the allowed ports first).

        The sandbox hides the host's /tmp under an empty tmpfs, and a checkout (its venv and this
        script) may live there: the relay runs from a copy in the bridge folder (bound into the
        sandbox) on the real interpreter behind the venv's symlink (``-I -S``: stdlib only)."""
        ports = ",".join(map(str, self.ports))
        python = python or os.path.realpath(sys.executable)
        relay = self.folder / RELAY_SCRIPT.name
        if not relay.exists():
            shutil.copyfile(RELAY_SCRIPT, relay)
        return [python, "-I", "-S", str(relay), str(self.folder), ports, "--", *argv]

    def close(self) -> None:
        self._finalizer()

    @staticmethod
    def _cleanup(listeners: list[socket.socket], folder: Path) -> None:
        for listener in listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            with contextlib.suppress(OSError):
                listener.close()
        shutil.rmtree(folder, ignore_errors=True)

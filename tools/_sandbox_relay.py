"""Runs inside the bubblewrap sandbox (standard library only, started by path with ``-I -S``):

    python -I -S _sandbox_relay.py SOCKET_DIR PORT[,PORT...] -- COMMAND...

Listens on 127.0.0.1:PORT in the sandbox's own network namespace, relays each connection to the
Unix socket ``SOCKET_DIR/PORT`` (which the host side, :mod:`.sandbox_bridge`, connects to the
same port on the host's loopback), and runs COMMAND; it exits with COMMAND's status. So a
sandboxed command reaches exactly those local ports and no other address.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def _serve(listener: socket.socket, path: str) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(path)
        except OSError:
            conn.close()
            upstream.close()
            continue
        threading.Thread(target=_pump, args=(conn, upstream), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, conn), daemon=True).start()


def main(argv: list[str]) -> int:
    sock_dir, ports, sep, *command = argv
    if sep != "--" or not command:
        print("usage: _sandbox_relay.py SOCKET_DIR PORTS -- COMMAND...", file=sys.stderr)
        return 2
    listeners = []
    for port in ports.split(","):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(port)))
        listener.listen(64)
        listener.set_inheritable(False)
        listeners.append((listener, os.path.join(sock_dir, port)))
    pid = os.fork()  # before any thread: the command gets a clean process
    if pid == 0:
        os.execvp(command[0], command)
    for listener, path in listeners:
        threading.Thread(target=_serve, args=(listener, path), daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # pass a stop on to the command
        signal.signal(sig, lambda signum, _frame: os.kill(pid, signum))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.stdout.flush()
    os._exit(main(sys.argv[1:]))

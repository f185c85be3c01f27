"""Raw sockets against the guard's servers: what a slow or hostile client sees."""

from __future__ import annotations

import socket


def closed_by_server(sock: socket.socket, patience: float) -> bytes | None:
    """What the server sent before closing the connection (a reset counts as a close); None when
    it was still open after `patience` seconds."""
    sock.settimeout(patience)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received

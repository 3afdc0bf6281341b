"""Free ports for servers started by tests and scripts."""

from __future__ import annotations

import random
import socket

__all__ = ["free_service_port"]


def free_service_port(host: str = "127.0.0.1", tries: int = 500) -> int:
    """A TCP port P on ``host`` with P, P + 1 and P + 2 free (a server binds all three: ``data_endpoints``).

    Drawn below Linux's ephemeral range (32768+), so the outgoing connections of clients cannot take
    P + 1 or P + 2 between this check and the server's bind, as they could with a port from bind(0).
    """
    for _ in range(tries):
        port = random.randrange(20_000, 32_700)
        try:
            for p in (port, port + 1, port + 2):
                with socket.socket() as probe:
                    probe.bind((host, p))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no three consecutive free TCP ports on {host} in {tries} tries")

"""The bridge's sockets: where they bind, CurveZMQ, and one socket set up the way the server needs it
(a size limit on every message, bounded queues, a deadline on every receive). No sessions, no agents."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from auras.errors import InvalidInputError

__all__ = ["CurveKeys", "SocketFactory", "data_endpoints", "free_service_port"]


def data_endpoints(bind: str) -> tuple[str, str]:
    """(observation endpoint, action endpoint) next to the service endpoint ``bind``.

    tcp://HOST:PORT -> PORT + 1 and PORT + 2; ipc://PATH -> PATH.obs and PATH.act.
    """
    if bind.startswith("tcp://"):
        host, sep, port = bind[len("tcp://") :].rpartition(":")
        if not sep or not port.isdigit():
            raise InvalidInputError(f"bind: expected tcp://HOST:PORT with a numeric port, got {bind!r}")
        return f"tcp://{host}:{int(port) + 1}", f"tcp://{host}:{int(port) + 2}"
    if bind.startswith("ipc://"):
        return bind + ".obs", bind + ".act"
    raise InvalidInputError(f"bind: expected tcp://HOST:PORT or ipc://PATH, got {bind!r}")


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


@dataclass(frozen=True)
class CurveKeys:
    """CurveZMQ for the server: its key pair, and optionally a directory of client public keys
    allowed to connect (without it any client that knows the server's public key may connect)."""

    public: bytes
    secret: bytes
    authorized_clients: Path | None = None

    @classmethod
    def load(cls, secret_file: str | Path, authorized_clients: str | Path | None = None) -> CurveKeys:
        import zmq.auth

        public, secret = zmq.auth.load_certificate(str(secret_file))
        if secret is None:
            raise InvalidInputError(f"{secret_file}: expected a secret key file (from `auras keys`), got a public one")
        return cls(public, secret, Path(authorized_clients) if authorized_clients else None)


class SocketFactory:
    """Bound sockets of one ZeroMQ context, each with the message size limit and high-water marks, and
    CurveZMQ (with the authenticator when ``curve.authorized_clients`` is set)."""

    def __init__(self, max_message_bytes: int, curve: CurveKeys | None = None) -> None:
        self.ctx = zmq.Context()
        self.max_bytes, self.curve = max_message_bytes, curve
        self._auth: Any = None

    def bind(self, kind: int, endpoint: str) -> zmq.Socket:
        """A socket of ``kind`` bound to ``endpoint`` (InvalidInputError when it cannot bind)."""
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_bytes)  # an oversized message never reaches us
        if kind == zmq.PUB:
            sock.setsockopt(zmq.SNDHWM, 100)
        else:
            sock.setsockopt(zmq.RCVHWM, 100)
        if kind == zmq.ROUTER:  # a robot restarting with a fixed routing id takes over its old connection
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self.curve is not None:
            if self._auth is None and self.curve.authorized_clients is not None:
                from zmq.auth.thread import ThreadAuthenticator

                self._auth = ThreadAuthenticator(self.ctx)
                self._auth.start()
                self._auth.configure_curve(domain="*", location=str(self.curve.authorized_clients))
            sock.curve_secretkey = self.curve.secret
            sock.curve_publickey = self.curve.public
            sock.curve_server = True
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close()
            raise InvalidInputError(f"cannot bind {endpoint}: {exc}") from None
        return sock

    def close(self) -> None:
        """Stop the authenticator and end the context (close the sockets first)."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self.ctx.term()

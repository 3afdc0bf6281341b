"""`auras serve --protocol openpi`: openpi's websocket policy-server protocol, so robot scripts written
for openpi's ``WebsocketClientPolicy`` drive an auras agent unchanged (docs/bridge.md, "openpi clients").

The protocol (openpi-client, ``websocket_client_policy`` and ``msgpack_numpy``):

- a websocket connection per robot; the server speaks first, with a metadata map;
- then each binary message is an observation map packed with msgpack, numpy arrays as
  ``{b"__ndarray__": True, b"data": bytes, b"dtype": str, b"shape": list}`` and numpy scalars as
  ``{b"__npgeneric__": True, b"data": value, b"dtype": str}`` (never pickle); the reply is the same
  encoding of ``{"actions": (H, A) float32, "server_timing": {"infer_ms", "prev_total_ms"}, ...}``;
- a map with ``__ctrl__`` (``episode_start``, ``episode_end``) controls the episode (auras resets the
  agent on ``episode_start``) and is answered with ``{"ok": True, "__ctrl__": ...}``; any other value is
  answered with ``{"ok": False, "error": ...}``;
- on an error the server sends the error as a text message, then closes with code 1011;
- ``GET /healthz`` answers 200 without a websocket.

Each connection is a session of a :class:`~auras.bridge.sessions.SessionHost` with its own agent (its own
pipeline; robots can share one batched perception model) and the same limits as the ZeroMQ bridge: a
session cap (one more is refused with HTTP 503 before anything is built), an idle timeout
(``serve.openpi_idle_timeout_s``: the connection is closed with code 1001), a message-size limit (close
1009) and limits on a message's maps and nesting; with an API key (openpi's ``api_key``: an
``Authorization: Api-Key KEY`` header) a connection without it is refused with HTTP 401.

Episodes: a new connection starts with a new agent. On one connection, an unchanged openpi robot script
sends no ``episode_start`` (openpi's ``WebsocketClientPolicy.reset()`` sends nothing), so auras also resets
the agent when the prompt changes and, with ``serve.openpi_keys.step`` set, when the robot's step counter in
that key does not increase (a new episode). Otherwise the first requests of a new episode may be answered
from observations of the last one still in the pipeline.

``serve.openpi_keys`` maps openpi's observation keys to auras': ``image.<camera>`` (uint8 HWC, or CHW,
resized to the policy's camera size if needed), ``state`` (padded with zeros or an error if longer than the
policy's), ``instruction`` (the prompt), ``step`` (optional: the episode's step counter).
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import http
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import numpy as np

from auras.bridge.limits import ServeLimits, exposure_warning, policy_limits
from auras.bridge.sessions import Session, SessionHost
from auras.bridge.wiring import session_agents
from auras.errors import ConfigError, InvalidInputError, clip
from auras.types import Observation
from auras_client.protocol import ProtocolError

__all__ = ["OpenpiServer", "observation_from", "pack", "parse_ws_address", "unpack"]

log = logging.getLogger("auras.bridge.openpi")
GOING_AWAY, MESSAGE_TOO_BIG, INTERNAL_ERROR, TRY_AGAIN_LATER = 1001, 1009, 1011, 1013  # websocket close codes


def _pack_array(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic) and obj.dtype.kind in ("V", "O", "c"):
        raise ValueError(f"openpi protocol: unsupported dtype {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _unpack_array(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind in ("V", "O", "c"):
            raise InvalidInputError(f"openpi message: unsupported dtype {dtype}")
        return np.ndarray(buffer=obj[b"data"], dtype=dtype, shape=obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


pack = functools.partial(msgpack.packb, default=_pack_array)
"""Encode a map the way openpi-client's ``msgpack_numpy.Packer`` does."""


def unpack(data: bytes, limits: ServeLimits | None = None) -> Any:
    """Decode a message the way openpi-client's ``msgpack_numpy.unpackb`` does (no pickle, ever), within
    ``limits`` (keys per map, items per list, nesting): InvalidInputError past them."""
    limits = limits or ServeLimits()
    try:
        message = msgpack.unpackb(data, object_hook=_unpack_array, max_map_len=limits.max_map_keys,
                                  max_array_len=limits.max_array_len, max_str_len=len(data), max_bin_len=len(data),
                                  max_ext_len=0)
    except InvalidInputError:
        raise
    except (ValueError, TypeError, msgpack.exceptions.ExtraData, msgpack.exceptions.StackError) as exc:
        raise InvalidInputError(
            f"openpi message: expected msgpack of at most {limits.max_map_keys} keys per map and "
            f"{limits.max_array_len} items per list, got one that fails to decode ({clip(exc, 120)})"
        ) from None
    if _depth(message, limits.max_depth + 1) > limits.max_depth:
        raise InvalidInputError(f"openpi message: expected at most {limits.max_depth} levels of nesting, got more")
    return message


def _depth(value: Any, stop: int) -> int:
    """How deeply ``value`` nests maps and lists (counting stops at ``stop``)."""
    if stop <= 0 or not isinstance(value, dict | list | tuple):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, stop - 1) for child in children), default=0)


def parse_ws_address(address: str) -> tuple[str, int]:
    """``ws://HOST:PORT`` (HOST a name, an IPv4 address or a bracketed IPv6 one) -> (host, port); ConfigError
    with what was expected otherwise."""
    expected = "expected ws://HOST:PORT with --protocol openpi (e.g. ws://127.0.0.1:8000 or ws://[::1]:8000)"
    if not address.startswith("ws://"):
        raise ConfigError(f"--bind: {expected}, got {clip(address, 80)!r}")
    host, sep, port = address.removeprefix("ws://").rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--bind: {expected} and a port in 0..65535, got {clip(address, 80)!r}")
    return host, int(port)


def observation_from(message: Mapping[str, Any], keys: Mapping[str, str], spec: Any, step_id: int) -> Observation:
    """An auras Observation from an openpi observation map; ``keys``: auras target -> openpi key."""
    images = {}
    for target, key in keys.items():
        if not target.startswith("image."):
            continue
        camera = target[len("image.") :]
        if camera not in spec.cameras:
            continue
        images[camera] = _image(_field(message, key), spec.cameras[camera], key)
    missing = sorted(set(spec.cameras) - set(images))
    if missing:
        raise InvalidInputError(f"openpi observation: no key maps to camera(s) {missing}; set serve.openpi_keys")
    state = np.asarray(_field(message, keys.get("state", "observation/state")), dtype=np.float32).reshape(-1)
    if state.shape[0] > spec.state_dim:
        raise InvalidInputError(
            f"openpi observation {keys.get('state')!r}: expected at most {spec.state_dim} values, got {state.shape[0]}"
        )
    state = np.pad(state, (0, spec.state_dim - state.shape[0]))
    prompt = _field(message, keys.get("instruction", "prompt"))
    if isinstance(prompt, bytes):
        prompt = prompt.decode("utf-8", "replace")
    return Observation(images=images, state=state, instruction=str(prompt), step_id=step_id,
                       capture_time=time.monotonic())


def _field(message: Mapping[str, Any], key: str) -> Any:
    if key not in message:
        raise InvalidInputError(f"openpi observation: expected key {key!r}, got keys {sorted(map(str, message))}")
    return message[key]


def _image(value: Any, size: tuple[int, int], key: str) -> np.ndarray:
    image = np.asarray(value)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:  # CHW, as some openpi clients send
        image = np.transpose(image, (1, 2, 0))
    if image.ndim != 3 or image.shape[-1] != 3:
        raise InvalidInputError(f"openpi observation {key!r}: expected an (H, W, 3) image, got shape {image.shape}")
    if image.dtype != np.uint8:
        unit = np.issubdtype(image.dtype, np.floating) and np.isfinite(image).all()
        if not (unit and image.min() >= 0 and image.max() <= 1):
            raise InvalidInputError(
                f"openpi observation {key!r}: expected uint8 (or float in [0, 1]), got {image.dtype}"
            )
        image = (image * 255).round().astype(np.uint8)  # float images in [0, 1]
    if image.shape[:2] != tuple(size):
        import cv2

        image = cv2.resize(np.ascontiguousarray(image), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


class OpenpiServer:
    """Serves one agent per websocket connection with openpi's protocol (see the module doc)."""

    def __init__(
        self,
        config: Any = None,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        agent_factory: Callable[[], Any] | None = None,
        keys: Mapping[str, str] | None = None,
        limits: ServeLimits | None = None,
        api_key: str | None = None,
    ) -> None:
        from websockets.sync.server import serve

        batcher = None
        if agent_factory is None:
            agent_factory, batcher = session_agents(config)
        if limits is None:
            limits = ServeLimits.from_config(config.serve) if config is not None else ServeLimits()
        self.limits = limits
        self.host_sessions = SessionHost(agent_factory, batcher, limits)
        self.keys = dict(keys if keys is not None else config.serve.openpi_keys)
        self._api_key = api_key
        self.counters = self.host_sessions.counters
        self._server = serve(self._handle, host, port, process_request=self._admit, compression=None,
                             max_size=limits.max_message_bytes)
        self.host, self.port = host, self._server.socket.getsockname()[1]
        self.warning = exposure_warning(self.address, host, api_key is not None,
                                        "give the robots a key with --api-key-file (openpi's api_key)")
        if self.warning:
            log.warning("openpi: %s", self.warning)
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()

    @property
    def address(self) -> str:
        return f"ws://[{self.host}]:{self.port}" if ":" in self.host else f"ws://{self.host}:{self.port}"

    @property
    def batcher(self) -> Any:
        return self.host_sessions.batcher

    @property
    def sessions(self) -> int:
        """Connections being served now."""
        return len(self.host_sessions)

    def stats(self) -> dict[str, Any]:
        """The server's counters and every session's (without ids)."""
        sessions = [{k: v for k, v in s.stats().items() if k != "session"} for s in self.host_sessions.sessions()]
        return {"server": dict(self.counters), "sessions": sessions}

    def _admit(self, connection: Any, request: Any) -> Any:
        """Before the websocket opens: /healthz, the API key (401 without it) and the session cap (503)."""
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self._api_key is not None:
            sent = request.headers.get("Authorization") or ""
            if not hmac.compare_digest(sent.encode(), f"Api-Key {self._api_key}".encode()):
                self.counters["refused_unauthorized"] += 1
                log.warning("openpi: refused a connection from %s without the API key", _peer(connection))
                return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                          "auras: this server needs an API key (openpi's api_key)\n")
        if self.host_sessions.full:  # the cheap answer before the handshake; admission() decides
            self.counters["refused_full"] += 1
            log.warning("openpi: refused a connection from %s: server full (%d sessions)", _peer(connection),
                        self.limits.max_sessions)
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE,
                                      f"auras: server full: {self.limits.max_sessions} sessions already "
                                      "(serve.max_sessions)\n")
        return None

    def _handle(self, websocket: Any) -> None:
        self.counters["connections"] += 1
        try:
            with self.host_sessions.admission() as place:
                agent = self.host_sessions.build_agent()
                session = self.host_sessions.add(place, _peer(websocket), agent, instruction="")
        except ProtocolError as exc:  # full: a race with another connection past _admit's check
            self._close(websocket, TRY_AGAIN_LATER, exc.message)
            return
        except Exception as exc:
            self._fail(websocket, exc)
            return
        try:
            spec = agent.policy_spec
            websocket.send(pack({"policy": spec.name, "action_shape": list(spec.action_shape),
                                 "execute_steps": spec.execute_steps, "mode": agent.config.pipeline.mode,
                                 "server": "auras", "limits": policy_limits(spec)}))
            self._serve(websocket, session)
        finally:
            if self.host_sessions.remove(session):
                self.host_sessions.close_session(session)

    def _serve(self, websocket: Any, session: Session) -> None:
        from websockets.exceptions import ConnectionClosed

        agent, counters = session.agent, session.counters
        step, previous_total, episode_step = 0, None, None
        while True:
            try:
                raw = websocket.recv(timeout=self.limits.openpi_idle_timeout_s)
            except TimeoutError:
                self.counters["sessions_expired"] += 1
                self._close(websocket, GOING_AWAY, f"idle for {self.limits.openpi_idle_timeout_s:g} s "
                            "(serve.openpi_idle_timeout_s)")
                return
            except ConnectionClosed as exc:
                if exc.rcvd is None and exc.sent is not None and exc.sent.code == MESSAGE_TOO_BIG:
                    self.counters["error_too_large"] += 1
                return
            start = time.monotonic()
            session.last_heard = start
            counters["messages"] += 1
            try:
                if isinstance(raw, str):
                    raise InvalidInputError("openpi message: expected a binary msgpack message, got text")
                message = unpack(raw, self.limits)
                if not isinstance(message, dict):
                    raise InvalidInputError(f"openpi message: expected a map, got {type(message).__name__}")
                if "__ctrl__" in message:
                    websocket.send(pack(self._control(session, message["__ctrl__"])))
                    continue
                obs = observation_from(message, self.keys, agent.spec, step)
                episode_step = self._new_episode_check(session, obs, message, episode_step)
                began = time.monotonic()
                action = agent.step(obs)
                timing = {"infer_ms": (time.monotonic() - began) * 1e3}
                if previous_total is not None:
                    timing["prev_total_ms"] = previous_total * 1e3
                reply = {
                    "actions": np.asarray(action.chunk, np.float32), "server_timing": timing,
                    "policy_timing": dict(action.timings.stages_ms), "step_id": action.step_id,
                    "context_step_id": action.context_step_id, "staleness_ms": action.staleness_ms,
                }
                websocket.send(pack(reply))
                counters["requests"] += 1
                self.counters["requests"] += 1
                step += 1
                previous_total = time.monotonic() - start
            except ConnectionClosed:
                return
            except Exception as exc:
                counters["errors"] += 1
                self._fail(websocket, exc)
                return

    def _control(self, session: Session, control: Any) -> dict[str, Any]:
        """The answer to a ``__ctrl__`` message (auras' extension of openpi's protocol)."""
        if control == "episode_start":
            self._reset(session, "episode_start")
            return {"ok": True, "__ctrl__": control}
        if control == "episode_end":
            return {"ok": True, "__ctrl__": control}
        session.counters["error_unknown_control"] += 1
        return {"ok": False, "__ctrl__": clip(control, 40),
                "error": f"__ctrl__: expected episode_start or episode_end, got {clip(repr(control), 60)}"}

    def _new_episode_check(self, session: Session, obs: Observation, message: Mapping[str, Any],
                           last_step: int | None) -> int | None:
        """Reset the agent when the prompt changes or the robot's step counter does not increase; returns
        the step counter (None without ``openpi_keys.step``)."""
        if session.instruction and obs.instruction != session.instruction:
            self._reset(session, "a new prompt")
        session.instruction = obs.instruction
        key = self.keys.get("step")
        if key is None:
            return None
        value = _field(message, key)
        try:
            step = int(np.asarray(value).reshape(()))
        except (TypeError, ValueError):
            raise InvalidInputError(f"openpi observation {key!r}: expected the episode's step counter (an int), "
                                    f"got {clip(repr(value), 60)}") from None
        if last_step is not None and step <= last_step:
            self._reset(session, f"the step counter went from {last_step} to {step}")
        return step

    def _reset(self, session: Session, why: str) -> None:
        session.agent.reset()
        session.counters["resets"] += 1
        log.info("openpi: session %s: agent reset (%s)", session.id, why)

    def _close(self, websocket: Any, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):  # the robot may already be gone
            websocket.close(code=code, reason=reason[:120])

    def _fail(self, websocket: Any, exc: BaseException) -> None:
        """openpi's error path: the error as text, then close 1011 (the client raises it)."""
        self.counters["errors"] += 1
        text = clip(f"{type(exc).__name__}: {exc}")
        log.warning("openpi: closing a connection: %s", text)
        try:
            websocket.send(text)
            websocket.close(code=INTERNAL_ERROR, reason="Internal server error. The error is in the previous frame.")
        except Exception:  # the robot is already gone
            pass

    def start(self) -> OpenpiServer:
        self._thread = threading.Thread(target=self.serve_forever, name="auras-openpi", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._serving.set()
        self._server.serve_forever()

    def request_stop(self) -> None:
        """End :meth:`serve_forever` (safe from a signal handler on the serving thread)."""
        threading.Thread(target=self._server.shutdown, name="auras-openpi-stop", daemon=True).start()

    def close(self) -> None:
        """Stop serving (or release the port of a server never started), then close every session. Idempotent."""
        if self._serving.is_set() or self._thread is not None:
            self._server.shutdown()
        else:
            self._server.socket.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.host_sessions.close()

    def __enter__(self) -> OpenpiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _peer(connection: Any) -> str:
    try:
        host, port = connection.remote_address[:2]
        return f"{host}:{port}"
    except Exception:
        return "robot"

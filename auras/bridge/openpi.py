"""`auras serve --protocol openpi`: openpi's websocket policy-server protocol, so robot scripts written
for openpi's ``WebsocketClientPolicy`` drive an auras agent unchanged (docs/bridge.md, "openpi clients").

The protocol (openpi-client, ``websocket_client_policy`` and ``msgpack_numpy``):

- a websocket connection per robot; the server speaks first, with a metadata map;
- then each binary message is an observation map packed with msgpack, numpy arrays as
  ``{b"__ndarray__": True, b"data": bytes, b"dtype": str, b"shape": list}`` and numpy scalars as
  ``{b"__npgeneric__": True, b"data": value, b"dtype": str}`` (never pickle); the reply is the same
  encoding of ``{"actions": (H, A) float32, "server_timing": {"infer_ms", "prev_total_ms"}, ...}``;
- a map with ``__ctrl__`` (``episode_start``, ``episode_end``) controls the episode (auras resets the
  agent on ``episode_start``) and is answered with a small map;
- on an error the server sends the error as a text message, then closes with code 1011;
- ``GET /healthz`` answers 200 without a websocket.

Each connection gets its own agent (its own pipeline; :func:`auras.bridge.wiring.session_agents`, so
robots can share one batched perception model). ``serve.openpi_keys`` maps openpi's observation keys
to auras': ``image.<camera>`` (uint8 HWC, or CHW, resized to the policy's camera size if needed),
``state`` (padded with zeros or an error if longer than the policy's), ``instruction`` (the prompt).
"""

from __future__ import annotations

import functools
import http
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import numpy as np

from auras.bridge.wiring import session_agents
from auras.errors import InvalidInputError
from auras.types import Observation

__all__ = ["OpenpiServer", "observation_from", "pack", "unpack"]

log = logging.getLogger("auras.bridge.openpi")
INTERNAL_ERROR = 1011


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


def unpack(data: bytes) -> Any:
    """Decode a message the way openpi-client's ``msgpack_numpy.unpackb`` does (no pickle, ever)."""
    return msgpack.unpackb(data, object_hook=_unpack_array)


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
                       capture_time=time.monotonic())  # fmt: skip


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
    ) -> None:
        from websockets.sync.server import serve

        self.batcher = None
        if agent_factory is None:
            agent_factory, self.batcher = session_agents(config)
        self._factory = agent_factory
        self.keys = dict(keys if keys is not None else config.serve.openpi_keys)
        self._build_lock = threading.Lock()
        self.sessions = 0
        self.counters: dict[str, int] = {"connections": 0, "requests": 0, "errors": 0}
        self._server = serve(self._handle, host, port, process_request=self._health, compression=None, max_size=None)
        self.host, self.port = host, self._server.socket.getsockname()[1]
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def _health(self, connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        return None

    def _handle(self, websocket: Any) -> None:
        self.counters["connections"] += 1
        try:
            with self._build_lock:  # lazy imports inside a build are not thread-safe
                agent = self._factory()
        except Exception as exc:
            self._fail(websocket, exc)
            return
        self.sessions += 1
        try:
            spec = agent.policy_spec
            websocket.send(pack({"policy": spec.name, "action_shape": list(spec.action_shape),
                                 "execute_steps": spec.execute_steps, "mode": agent.config.pipeline.mode,
                                 "server": "auras"}))  # fmt: skip
            self._serve(websocket, agent)
        finally:
            self.sessions -= 1
            agent.close()

    def _serve(self, websocket: Any, agent: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        step, previous_total = 0, None
        while True:
            try:
                raw = websocket.recv()
            except ConnectionClosed:
                return
            start = time.monotonic()
            try:
                if isinstance(raw, str):
                    raise InvalidInputError("openpi message: expected a binary msgpack message, got text")
                message = unpack(raw)
                if not isinstance(message, dict):
                    raise InvalidInputError(f"openpi message: expected a map, got {type(message).__name__}")
                control = message.get("__ctrl__")
                if control is not None:
                    if control == "episode_start":
                        agent.reset()
                    websocket.send(pack({"ok": True, "__ctrl__": control}))
                    continue
                obs = observation_from(message, self.keys, agent.spec, step)
                began = time.monotonic()
                action = agent.step(obs)
                timing = {"infer_ms": (time.monotonic() - began) * 1e3}
                if previous_total is not None:
                    timing["prev_total_ms"] = previous_total * 1e3
                reply = {
                    "actions": np.asarray(action.chunk, np.float32), "server_timing": timing,
                    "policy_timing": dict(action.timings.stages_ms), "step_id": action.step_id,
                    "context_step_id": action.context_step_id, "staleness_ms": action.staleness_ms,
                }  # fmt: skip
                websocket.send(pack(reply))
                self.counters["requests"] += 1
                step += 1
                previous_total = time.monotonic() - start
            except ConnectionClosed:
                return
            except Exception as exc:
                self._fail(websocket, exc)
                return

    def _fail(self, websocket: Any, exc: BaseException) -> None:
        """openpi's error path: the error as text, then close 1011 (the client raises it)."""
        self.counters["errors"] += 1
        log.warning("openpi: closing a connection: %s: %s", type(exc).__name__, exc)
        try:
            websocket.send(f"{type(exc).__name__}: {exc}")
            websocket.close(code=INTERNAL_ERROR, reason="Internal server error. The error is in the previous frame.")
        except Exception:  # the robot is already gone
            pass

    def start(self) -> OpenpiServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="auras-openpi", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def request_stop(self) -> None:
        """End :meth:`serve_forever` (safe from a signal handler on the serving thread)."""
        threading.Thread(target=self._server.shutdown, name="auras-openpi-stop", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.batcher is not None:
            self.batcher.close()

    def __enter__(self) -> OpenpiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

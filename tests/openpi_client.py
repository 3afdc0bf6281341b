"""A client written from openpi's protocol (openpi-client pins numpy < 2, so it cannot join this environment):
what openpi's ``WebsocketClientPolicy`` and ``msgpack_numpy`` do, for the openpi server's tests."""

from __future__ import annotations

import functools

import msgpack
import numpy as np
from websockets.sync.client import connect


# -- openpi-client's msgpack_numpy, as its protocol defines it ------------------------------------------
def _pack_array(obj):
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _unpack_array(obj):
    if b"__ndarray__" in obj:
        return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


packb = functools.partial(msgpack.packb, default=_pack_array)
unpackb = functools.partial(msgpack.unpackb, object_hook=_unpack_array)


class OpenpiStyleClient:
    """What openpi's WebsocketClientPolicy does: connect, read the metadata, then infer()."""

    def __init__(self, uri: str, api_key: str | None = None) -> None:
        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        self.ws = connect(uri, compression=None, max_size=None, additional_headers=headers)
        self.metadata = unpackb(self.ws.recv())

    def infer(self, obs: dict) -> dict:
        self.ws.send(packb(obs))
        response = self.ws.recv()
        if isinstance(response, str):
            raise RuntimeError(f"Error in inference server:\n{response}")
        return unpackb(response)

    def close(self) -> None:
        self.ws.close()


def libero_obs(i: int, size: int = 224) -> dict:
    """An observation as openpi's LIBERO example builds it (224 px HWC uint8, state, prompt)."""
    rng = np.random.default_rng(i)
    return {
        "observation/image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/state": np.full(4, 0.1 * i, np.float32),
        "prompt": "push the puck to the goal",
    }

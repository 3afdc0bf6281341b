"""The auras bridge wire format (schema version 1); the full text is docs/bridge.md.

Imports only numpy and msgpack (OpenCV lazily, for JPEG/PNG), so a robot can use it without torch.

Data messages are ZeroMQ multipart frames::

    [topic (utf-8), header (msgpack map), buffer_0, buffer_1, ...]

The header carries ``v`` (schema version), ``seq`` (the robot's sequence number), ``stamp`` (capture
time, seconds on the robot's clock), ``session`` and ``arrays``: one descriptor per buffer,
``{"dtype", "shape", "encoding"}``. Service requests and replies are single msgpack maps.
Nothing is ever pickled. Every decode checks sizes before it allocates (for JPEG/PNG: the image
size in the file's own header, before decoding it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

__all__ = [
    "DTYPES",
    "ENCODINGS",
    "ERROR_CODES",
    "MAX_MESSAGE_BYTES",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "Frame",
    "ProtocolError",
    "decode_frame",
    "decode_map",
    "encode_frame",
    "encode_map",
    "error_reply",
]

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_MESSAGE_BYTES = 16 * 2**20  # default cap on one message (all frames); a server may set its own
MAX_HEADER_BYTES = 64 * 2**10
MAX_TOPIC_BYTES = 128
MAX_ARRAYS = 16
MAX_DIMS = 4
MAX_IMAGE_PIXELS = 4096 * 4096  # a JPEG/PNG may not declare more (bounds what decoding allocates)
DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float16", "float32", "float64")
ENCODINGS = ("raw", "jpeg", "png")

ERROR_CODES = {
    "bad_message": "not a well-formed message (frame count, topic, header)",
    "bad_version": "schema version not supported",
    "bad_dtype": "array dtype not in the protocol's list",
    "bad_shape": "array shape invalid or not what the session declared",
    "bad_encoding": "unknown encoding, or the buffer does not decode to the declared array",
    "too_large": "message over the size limit",
    "bad_request": "service request malformed or with invalid arguments",
    "unknown_op": "service operation not known",
    "unknown_session": "no such session (expired, or the server restarted): say hello again",
    "unknown_topic": "topic not known",
    "agent_error": "the agent failed on this session",
    "over_capacity": "the server cannot meet this robot's contract without breaking its other robots'",
    "internal": "unexpected server error",
}


class ProtocolError(ValueError):
    """A message that breaks the protocol; ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_CODES, code
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Frame:
    """A decoded data message."""

    topic: str
    header: dict[str, Any]
    arrays: list[np.ndarray] = field(default_factory=list)

    @property
    def seq(self) -> int:
        return int(self.header["seq"])

    @property
    def stamp(self) -> float:
        return float(self.header["stamp"])


def encode_map(data: Mapping[str, Any]) -> bytes:
    """A msgpack map (service requests/replies, headers)."""
    return msgpack.packb(dict(data), use_bin_type=True)


def decode_map(raw: bytes, max_bytes: int = MAX_HEADER_BYTES) -> dict[str, Any]:
    """Decode a msgpack map with bounded sizes; ProtocolError('bad_message') otherwise."""
    if len(raw) > max_bytes:
        raise ProtocolError("too_large", f"map of {len(raw)} bytes exceeds {max_bytes}")
    try:
        value = msgpack.unpackb(
            raw, raw=False, strict_map_key=True, max_str_len=max_bytes, max_bin_len=max_bytes,
            max_array_len=4096, max_map_len=256, max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError("bad_message", f"not a msgpack map ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_message", f"expected a msgpack map, got {type(value).__name__}")
    return value


def error_reply(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The service reply for a failed request."""
    return {"v": SCHEMA_VERSION, "ok": False, "error": {"code": code, "message": message}, **extra}


# -- arrays ---------------------------------------------------------------------------------------

_DTYPE_NAMES = {np.dtype(name): name for name in DTYPES}  # native byte order only, as the wire is


def _encode_array(array: np.ndarray, encoding: str, jpeg_quality: int) -> tuple[dict[str, Any], Any]:
    array = np.asarray(array)
    dtype = _DTYPE_NAMES.get(array.dtype)  # dtype.name is computed in Python on every access
    if dtype is None and not array.dtype.isnative:  # the wire carries native (little-endian) bytes
        array = array.astype(array.dtype.newbyteorder("="))
        dtype = _DTYPE_NAMES.get(array.dtype)
    if dtype is None:
        raise ProtocolError("bad_dtype", f"dtype {array.dtype} not in {DTYPES}")
    if array.ndim > MAX_DIMS:
        raise ProtocolError("bad_shape", f"at most {MAX_DIMS} dimensions, got shape {array.shape}")
    desc = {"dtype": dtype, "shape": list(array.shape), "encoding": encoding}
    if encoding == "raw":
        return desc, np.ascontiguousarray(array).data  # zero copy for contiguous arrays
    if encoding not in ENCODINGS:
        raise ProtocolError("bad_encoding", f"encoding {encoding!r} not in {ENCODINGS}")
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3))):
        raise ProtocolError("bad_encoding", f"{encoding} carries uint8 (H, W) or (H, W, 3) images, got "
                            f"{array.dtype} {array.shape}")
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if encoding == "jpeg" else []
    bgr = array[..., ::-1] if array.ndim == 3 and array.shape[2] == 3 else array  # OpenCV orders BGR
    ok, buffer = cv2.imencode(".jpg" if encoding == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ProtocolError("bad_encoding", f"OpenCV could not encode a {array.shape} image as {encoding}")
    return desc, buffer.tobytes()


def _decode_array(desc: Any, buffer: Any) -> np.ndarray:
    if not isinstance(desc, dict) or set(desc) != {"dtype", "shape", "encoding"}:
        raise ProtocolError("bad_message", f"array descriptor must be {{dtype, shape, encoding}}, got {desc!r:.120}")
    dtype, shape, encoding = desc["dtype"], desc["shape"], desc["encoding"]
    if dtype not in DTYPES:
        raise ProtocolError("bad_dtype", f"dtype {dtype!r:.40} not in {DTYPES}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape)
    ):
        raise ProtocolError(
            "bad_shape", f"shape must be a list of at most {MAX_DIMS} non-negative ints, got {shape!r:.80}"
        )
    if encoding not in ENCODINGS:
        raise ProtocolError("bad_encoding", f"encoding {encoding!r:.40} not in {ENCODINGS}")
    view = memoryview(buffer)
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    if encoding == "raw":
        if view.nbytes != expected:
            raise ProtocolError("bad_shape", f"buffer has {view.nbytes} bytes, {dtype} {shape} needs {expected}")
        return np.frombuffer(view, dtype=dtype).reshape(shape)
    if dtype != "uint8" or not (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3))):
        raise ProtocolError("bad_encoding", f"{encoding} carries uint8 (H, W[, 3]) images, declared {dtype} {shape}")
    if shape[0] * shape[1] > MAX_IMAGE_PIXELS:
        raise ProtocolError("too_large", f"{encoding} image of {shape[0]}x{shape[1]} exceeds {MAX_IMAGE_PIXELS} pixels")
    dims = _image_dims(view, encoding)  # before decoding: a tiny file may claim a huge image
    if dims != (shape[0], shape[1]):
        raise ProtocolError("bad_encoding", f"{encoding} header says {dims}, descriptor declares {shape[:2]}")
    import cv2

    flags = cv2.IMREAD_COLOR if len(shape) == 3 and shape[2] == 3 else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(view, np.uint8), flags) if view.nbytes else None
    if image is None:
        raise ProtocolError("bad_encoding", f"buffer of {view.nbytes} bytes is not a valid {encoding} image")
    if image.ndim == 3:
        image = image[..., ::-1]
    image = np.ascontiguousarray(image).reshape(image.shape[0], image.shape[1], *shape[2:])
    if list(image.shape) != shape:
        raise ProtocolError("bad_shape", f"{encoding} image decodes to {list(image.shape)}, header declares {shape}")
    return image


def _image_dims(data: memoryview, encoding: str) -> tuple[int, int] | None:
    """(height, width) from a PNG IHDR or a JPEG SOF marker, without decoding; None if not found.
    The JPEG walk jumps from segment to segment, so large EXIF/ICC segments before the frame cost nothing."""
    data = data.cast("B") if data.format != "B" else data
    if encoding == "png":
        head = bytes(data[:24])
        if len(head) >= 24 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
        return None
    if bytes(data[:2]) != b"\xff\xd8":
        return None
    i, end = 2, data.nbytes
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            if i + 9 > end:
                return None
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
        if marker in (0xD9, 0xDA) or length < 2:  # end of image / start of scan before any frame
            return None
        i += 2 + length
    return None


# -- frames ---------------------------------------------------------------------------------------


def encode_frame(
    topic: str,
    arrays: Sequence[np.ndarray] = (),
    *,
    seq: int,
    stamp: float,
    encoding: str | Sequence[str] = "raw",
    jpeg_quality: int = 90,
    **fields: Any,
) -> list[Any]:
    """Multipart frames for one data message; ``fields`` go into the header (msgpack-able values)."""
    if len(arrays) > MAX_ARRAYS:
        raise ProtocolError("bad_message", f"at most {MAX_ARRAYS} arrays per message, got {len(arrays)}")
    encodings = [encoding] * len(arrays) if isinstance(encoding, str) else list(encoding)
    descs, buffers = [], []
    for array, enc in zip(arrays, encodings, strict=True):
        desc, buffer = _encode_array(array, enc, jpeg_quality)
        descs.append(desc)
        buffers.append(buffer)
    header = {"v": SCHEMA_VERSION, "seq": int(seq), "stamp": float(stamp), **fields, "arrays": descs}
    return [topic.encode(), encode_map(header), *buffers]


def decode_frame(parts: Sequence[Any], max_bytes: int = MAX_MESSAGE_BYTES) -> Frame:
    """Validate and decode multipart frames; raises ProtocolError with the right code."""
    sizes = [memoryview(p).nbytes for p in parts]
    if sum(sizes) > max_bytes:
        raise ProtocolError("too_large", f"message of {sum(sizes)} bytes exceeds the limit of {max_bytes}")
    if len(parts) < 2:
        raise ProtocolError("bad_message", f"expected [topic, header, buffers...], got {len(parts)} frame(s)")
    if sizes[0] > MAX_TOPIC_BYTES:
        raise ProtocolError("bad_message", f"topic of {sizes[0]} bytes exceeds {MAX_TOPIC_BYTES}")
    try:
        topic = bytes(parts[0]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("bad_message", "topic is not utf-8") from None
    header = decode_map(bytes(parts[1]))
    version = header.get("v")
    if isinstance(version, bool) or not isinstance(version, int) or version not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            "bad_version", f"schema version {version!r:.20} not supported; supported: {SUPPORTED_VERSIONS}"
        )
    for key, kinds in (("seq", (int,)), ("stamp", (int, float))):
        value = header.get(key)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ProtocolError("bad_message", f"header {key!r} must be a number, got {value!r:.40}")
    if header["seq"] < 0 or not math.isfinite(header["stamp"]):
        raise ProtocolError(
            "bad_message", f"header needs seq >= 0 and a finite stamp, got {header['seq']}, {header['stamp']}"
        )
    descs = header.get("arrays", [])
    if not isinstance(descs, list) or len(descs) != len(parts) - 2:
        count = len(descs) if isinstance(descs, list) else descs
        raise ProtocolError("bad_message", f"header describes {count!r:.20} arrays, message carries {len(parts) - 2}")
    arrays = [_decode_array(desc, buffer) for desc, buffer in zip(descs, parts[2:], strict=True)]
    return Frame(topic, header, arrays)

"""The bridge wire format: codec round trips and every malformed-frame answer."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auras_client.protocol import (
    DTYPES,
    ERROR_CODES,
    ProtocolError,
    decode_frame,
    decode_map,
    encode_frame,
    encode_map,
)


def _wire(frames):
    """What arrives on the other side: bytes per frame."""
    return [bytes(f) if not isinstance(f, bytes) else f for f in frames]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (2, 3, 4), (1, 2, 3, 2)])
def test_raw_round_trip_for_every_dtype_and_rank(dtype, shape):
    rng = np.random.default_rng(0)
    array = (rng.random(shape) * 100).astype(dtype)
    frame = decode_frame(_wire(encode_frame("joint_states", [array], seq=5, stamp=1.25, session="s")))
    assert frame.topic == "joint_states" and frame.seq == 5 and frame.stamp == 1.25
    assert frame.header["session"] == "s"
    out = frame.arrays[0]
    assert out.dtype == array.dtype and out.shape == array.shape and np.array_equal(out, array)


def test_non_contiguous_arrays_are_sent_by_value():
    array = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    assert np.array_equal(decode_frame(_wire(encode_frame("t", [array], seq=0, stamp=0)).copy()).arrays[0], array)


@pytest.mark.parametrize("shape", [(84, 84, 3), (48, 64, 3), (32, 32)])
def test_png_is_lossless_and_jpeg_is_close(shape):
    rng = np.random.default_rng(1)
    smooth = np.linspace(0, 255, np.prod(shape)).reshape(shape)
    image = np.clip(smooth + rng.normal(0, 3, shape), 0, 255).astype(np.uint8)
    png = decode_frame(_wire(encode_frame("camera/front", [image], seq=1, stamp=0, encoding="png"))).arrays[0]
    assert np.array_equal(png, image)
    jpeg = decode_frame(_wire(encode_frame("camera/front", [image], seq=1, stamp=0, encoding="jpeg"))).arrays[0]
    assert jpeg.shape == image.shape and np.abs(jpeg.astype(int) - image).mean() < 6
    assert len(encode_frame("c", [image], seq=1, stamp=0, encoding="jpeg")[2]) < image.nbytes


def test_colour_order_survives_the_image_codecs():
    image = np.zeros((16, 16, 3), np.uint8)
    image[..., 0] = 255  # pure red in RGB
    for encoding in ("png", "jpeg"):
        out = decode_frame(_wire(encode_frame("c", [image], seq=0, stamp=0, encoding=encoding))).arrays[0]
        assert out[..., 0].mean() > 240 and out[..., 2].mean() < 15, encoding


def test_several_arrays_with_their_own_encodings():
    image, state = np.full((8, 8, 3), 7, np.uint8), np.arange(4, dtype=np.float32)
    frame = decode_frame(_wire(encode_frame("x", [image, state], seq=2, stamp=0, encoding=["png", "raw"])))
    assert np.array_equal(frame.arrays[0], image) and np.array_equal(frame.arrays[1], state)


def _header(**overrides):
    header = {"v": 1, "seq": 1, "stamp": 0.0, "arrays": [{"dtype": "float32", "shape": [4], "encoding": "raw"}]}
    header.update(overrides)
    return msgpack.packb(header)


BUFFER = np.zeros(4, np.float32).tobytes()


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        ([b"joint_states"], "bad_message"),
        ([b"joint_states", b"\xc1\xc1garbage", BUFFER], "bad_message"),
        ([b"joint_states", msgpack.packb([1, 2]), BUFFER], "bad_message"),
        ([b"\xff\xfe", _header(), BUFFER], "bad_message"),
        ([b"t" * 200, _header(), BUFFER], "bad_message"),
        ([b"joint_states", _header(v=99), BUFFER], "bad_version"),
        ([b"joint_states", _header(v=None), BUFFER], "bad_version"),
        ([b"joint_states", _header(seq=-1), BUFFER], "bad_message"),
        ([b"joint_states", _header(seq="7"), BUFFER], "bad_message"),
        ([b"joint_states", _header(stamp=float("nan")), BUFFER], "bad_message"),
        ([b"joint_states", _header(), BUFFER, BUFFER], "bad_message"),
        (
            [b"joint_states", _header(arrays=[{"dtype": "object", "shape": [4], "encoding": "raw"}]), BUFFER],
            "bad_dtype",
        ),
        (
            [b"joint_states", _header(arrays=[{"dtype": "float32", "shape": [5], "encoding": "raw"}]), BUFFER],
            "bad_shape",
        ),
        (
            [b"joint_states", _header(arrays=[{"dtype": "float32", "shape": [-4], "encoding": "raw"}]), BUFFER],
            "bad_shape",
        ),
        (
            [b"joint_states", _header(arrays=[{"dtype": "float32", "shape": [1] * 5, "encoding": "raw"}]), BUFFER],
            "bad_shape",
        ),
        (
            [b"joint_states", _header(arrays=[{"dtype": "float32", "shape": [4], "encoding": "lz4"}]), BUFFER],
            "bad_encoding",
        ),
        (
            [b"c", _header(arrays=[{"dtype": "uint8", "shape": [8, 8, 3], "encoding": "png"}]), b"not a png"],
            "bad_encoding",
        ),
        ([b"c", _header(arrays=[{"dtype": "float32", "shape": [8, 8, 3], "encoding": "jpeg"}]), b"x"], "bad_encoding"),
        ([b"joint_states", _header(arrays=[{"dtype": "float32"}]), BUFFER], "bad_message"),
    ],
)
def test_malformed_frames_get_the_right_error_code(parts, code):
    with pytest.raises(ProtocolError) as err:
        decode_frame(parts)
    assert err.value.code == code and err.value.message


def test_declared_image_size_must_match_the_decoded_one():
    png = encode_frame("c", [np.zeros((8, 8, 3), np.uint8)], seq=0, stamp=0, encoding="png")
    header = _header(arrays=[{"dtype": "uint8", "shape": [16, 16, 3], "encoding": "png"}])
    with pytest.raises(ProtocolError, match=r"png header says \(8, 8\), descriptor declares \[16, 16\]"):
        decode_frame([png[0], header, png[2]])


def test_size_limits_are_checked_before_decoding():
    with pytest.raises(ProtocolError) as err:
        decode_frame([b"t", _header(), b"\x00" * 2000], max_bytes=1000)
    assert err.value.code == "too_large"
    with pytest.raises(ProtocolError) as err:
        decode_map(msgpack.packb({"x": "y" * 100_000}))
    assert err.value.code == "too_large"


def test_encoder_refuses_what_the_protocol_cannot_carry():
    with pytest.raises(ProtocolError, match="bad_dtype"):
        encode_frame("t", [np.array(["text"])], seq=0, stamp=0)
    with pytest.raises(ProtocolError, match="bad_encoding"):
        encode_frame("t", [np.zeros((4, 4, 3), np.float32)], seq=0, stamp=0, encoding="jpeg")
    with pytest.raises(ProtocolError, match="bad_encoding"):
        encode_frame("t", [np.zeros(3, np.uint8)], seq=0, stamp=0, encoding="webp")


def test_maps_round_trip_and_no_pickle_is_possible():
    assert decode_map(encode_map({"op": "hello", "n": [1, 2]})) == {"op": "hello", "n": [1, 2]}
    with pytest.raises(ProtocolError, match="bad_message"):
        decode_map(msgpack.packb(msgpack.ExtType(1, b"\x80\x04pickled")))
    assert set(ERROR_CODES) >= {"bad_version", "bad_dtype", "bad_shape", "bad_encoding", "too_large"}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=0, max_size=5))
def test_random_bytes_never_escape_as_anything_but_protocol_errors(parts):
    try:
        decode_frame(parts)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES


@pytest.mark.parametrize("encoding", ["png", "jpeg"])
def test_an_image_that_claims_a_different_size_is_refused_before_decoding(encoding):
    """A decompression bomb: a small file whose own header declares a huge image."""
    big = encode_frame("c", [np.zeros((512, 512, 3), np.uint8)], seq=0, stamp=0, encoding=encoding)
    header = msgpack.packb({"v": 1, "seq": 0, "stamp": 0.0,
                            "arrays": [{"dtype": "uint8", "shape": [84, 84, 3], "encoding": encoding}]})
    with pytest.raises(ProtocolError, match="header says \\(512, 512\\)") as err:
        decode_frame([big[0], header, big[2]])
    assert err.value.code == "bad_encoding"


def test_a_jpeg_with_large_metadata_before_its_frame_header_decodes():
    """Camera JPEGs can carry 100+ KiB of EXIF/ICC segments before the start-of-frame marker."""
    image = np.random.default_rng(0).integers(0, 255, (84, 84, 3), dtype=np.uint8)
    frames = encode_frame("camera/front", [image], seq=0, stamp=0, encoding="jpeg")
    jpeg = bytes(frames[2])
    app1 = b"\xff\xe1" + (65533).to_bytes(2, "big") + b"Exif\x00\x00" + bytes(65525)  # a maximal segment
    padded = jpeg[:2] + app1 * 3 + jpeg[2:]  # the frame header now starts after 192 KiB
    assert len(padded) > 3 * 65536
    decoded = decode_frame(_wire([frames[0], frames[1], padded])).arrays[0]
    np.testing.assert_array_equal(decoded, decode_frame(_wire(frames)).arrays[0])  # metadata changes no pixel


def test_an_image_over_the_pixel_cap_is_refused_before_its_header_is_read():
    header = msgpack.packb({"v": 1, "seq": 0, "stamp": 0.0,
                            "arrays": [{"dtype": "uint8", "shape": [4097, 4096], "encoding": "png"}]})
    with pytest.raises(ProtocolError, match="exceeds") as err:
        decode_frame([b"c", header, b"\x89PNG"])
    assert err.value.code == "too_large"


def test_a_big_endian_array_is_sent_in_the_wires_byte_order():
    values = np.array([0.5, -1.0, 2.0], dtype=">f4")
    frames = encode_frame("joint_states", [values], seq=0, stamp=0)
    decoded = decode_frame(_wire(frames)).arrays[0]
    assert decoded.dtype == np.float32 and decoded.tolist() == [0.5, -1.0, 2.0]

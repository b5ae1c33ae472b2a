"""Request images decoded once per content: the same data URL gives the same PIL object (so the
prompt caches find it by identity), other bytes another, and each server's pixel limit still holds."""

from __future__ import annotations

import base64
import io

import pytest

from omni_agent.serve.chat import ChatLimits, _image
from omni_agent.serve.errors import RequestError
from omni_agent.serve.image_memo import ImageMemo


def _data_url(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_the_same_data_url_gives_the_same_decoded_image():
    first = _image(_data_url((1, 2, 3)), ChatLimits(), "messages[0]")
    again = _image(_data_url((1, 2, 3)), ChatLimits(), "messages[1]")
    other = _image(_data_url((3, 2, 1)), ChatLimits(), "messages[2]")
    assert again.load() is first.load()
    assert other.load() is not first.load() and other.load().getpixel((0, 0)) == (3, 2, 1)


def test_a_remembered_image_still_meets_each_servers_pixel_limit():
    url = _data_url((9, 9, 9), size=(100, 100))
    assert _image(url, ChatLimits(), "m").width == 100
    with pytest.raises(RequestError) as caught:
        _image(url, ChatLimits(max_image_pixels=50 * 50), "m")
    assert caught.value.code == "image_too_large"


def test_the_memo_is_bounded_and_keeps_nothing_on_a_decode_error():
    memo = ImageMemo(capacity=2)
    for i in range(3):
        memo.get(bytes([i]), lambda i=i: f"image {i}")
    assert memo.get(bytes([2]), lambda: "again") == "image 2" and memo.hits == 1
    assert memo.get(bytes([0]), lambda: "decoded again") == "decoded again"  # the oldest was dropped

    def broken() -> str:
        raise ValueError("not an image")

    with pytest.raises(ValueError):
        memo.get(b"bad", broken)
    assert memo.get(b"bad", lambda: "fine") == "fine"

"""The coordinate module: model space <-> image pixels <-> screen points, and model-side resizing."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from omni_agent.coords import (
    QWEN3_SPEC,
    QWEN25_SPEC,
    ModelImageSpec,
    Monitor,
    image_to_model,
    image_to_screen,
    image_tokens,
    model_to_image,
    model_to_screen,
    resize_for_model,
    screen_to_image,
    screen_to_model,
    smart_resize,
    spec_for,
)

SPECS = st.sampled_from([QWEN3_SPEC, QWEN25_SPEC])
SIDES = st.integers(min_value=64, max_value=4000)
floats = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


@st.composite
def image_sizes(draw: st.DrawFn) -> tuple[int, int]:
    w = draw(SIDES)
    h = draw(st.integers(min_value=max(64, w // 8), max_value=min(4000, w * 8)))
    return w, h


@st.composite
def monitors(draw: st.DrawFn, min_side: int = 400) -> Monitor:
    return Monitor(
        left=draw(st.integers(min_value=-5000, max_value=5000)),
        top=draw(st.integers(min_value=-3000, max_value=3000)),
        width=draw(st.integers(min_value=min_side, max_value=4000)),
        height=draw(st.integers(min_value=min_side, max_value=3000)),
        scale=draw(st.sampled_from([1.0, 1.25, 1.5, 2.0, 3.0])),
    )


# -- token counts and the resize rule ----------------------------------------------------------


def test_token_counts_match_the_model_cards() -> None:
    assert image_tokens(720, 1280, QWEN3_SPEC) == 880  # 704 x 1280 after the factor-32 resize
    assert image_tokens(1080, 1920, QWEN3_SPEC) == 2040  # 1088 x 1920
    assert image_tokens(800, 1280, QWEN3_SPEC) == 1000  # already multiples of 32
    assert image_tokens(720, 1280, QWEN25_SPEC) == 26 * 46  # 728 x 1288, factor 28


def test_max_pixels_caps_the_tokens() -> None:
    spec = QWEN3_SPEC.model_copy(update={"max_pixels": 1280 * 32 * 32 // 2})
    assert image_tokens(1080, 1920, spec) <= 640
    assert spec.resized_size((1920, 1080))[0] % 32 == 0


@settings(max_examples=150, deadline=None)
@given(size=image_sizes(), spec=SPECS)
def test_resized_sides_are_multiples_of_the_factor_within_bounds(size: tuple[int, int], spec: ModelImageSpec) -> None:
    rw, rh = spec.resized_size(size)
    assert rw % spec.factor == 0 and rh % spec.factor == 0
    assert spec.min_pixels <= rw * rh <= spec.max_pixels
    # aspect ratio kept within one token row/column of rounding
    assert abs(rw / rh - size[0] / size[1]) <= (size[0] / size[1]) * (2 * spec.factor / min(rw, rh)) + 1e-9
    assert image_tokens(size[1], size[0], spec) == (rw // spec.factor) * (rh // spec.factor)


def test_smart_resize_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        smart_resize(0, 100)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 5000)


def test_spec_validation_and_family_lookup() -> None:
    with pytest.raises(ValueError, match="min_pixels"):
        ModelImageSpec(min_pixels=10_000, max_pixels=5_000)
    assert spec_for("Qwen/Qwen3-Omni-30B-A3B-Instruct") is QWEN3_SPEC
    assert spec_for("Qwen/Qwen2.5-VL-7B-Instruct") is QWEN25_SPEC
    assert spec_for("qwen2_5-omni-3b").coordinate_space == "absolute_resized"
    assert spec_for("qwen3", max_pixels=1_000_000).max_pixels == 1_000_000
    with pytest.raises(ValueError, match="unknown model family"):
        spec_for("llama-3")


# -- model space <-> image pixels ----------------------------------------------------------------


def test_known_points_for_both_families() -> None:
    size = (1280, 800)
    assert model_to_image(500, 500, image_size=size, spec=QWEN3_SPEC) == (640.0, 400.0)
    # Qwen2.5 sees 1288 x 812: its pixel (644, 406) is the screenshot's (640, 400)
    assert QWEN25_SPEC.resized_size(size) == (1288, 812)
    assert model_to_image(644, 406, image_size=size, spec=QWEN25_SPEC) == pytest.approx((640.0, 400.0))
    mon = Monitor(width=1280, height=800)
    assert model_to_screen(1000, 1000, spec=QWEN3_SPEC, monitor=mon) == (1279, 799)  # last pixel, not off-screen
    assert model_to_screen(0, 0, spec=QWEN3_SPEC, monitor=mon) == (0, 0)
    assert model_to_screen(1288, 812, spec=QWEN25_SPEC, monitor=mon) == (1279, 799)


@settings(max_examples=150, deadline=None)
@given(size=image_sizes(), spec=SPECS, fx=st.floats(0, 1), fy=st.floats(0, 1))
def test_model_image_model_round_trip(size: tuple[int, int], spec: ModelImageSpec, fx: float, fy: float) -> None:
    mx, my = spec.model_extent(size)
    x, y = fx * mx, fy * my
    ix, iy = model_to_image(x, y, image_size=size, spec=spec)
    bx, by = image_to_model(ix, iy, image_size=size, spec=spec)
    assert bx == pytest.approx(x, abs=1e-6) and by == pytest.approx(y, abs=1e-6)


@settings(max_examples=150, deadline=None)
@given(size=image_sizes(), spec=SPECS, x=floats, y=floats)
def test_model_to_image_clamps_to_the_image(size: tuple[int, int], spec: ModelImageSpec, x: float, y: float) -> None:
    ix, iy = model_to_image(x, y, image_size=size, spec=spec)
    assert 0 <= ix <= size[0] and 0 <= iy <= size[1]
    mx, my = image_to_model(x, y, image_size=size, spec=spec)
    ex, ey = spec.model_extent(size)
    assert 0 <= mx <= ex and 0 <= my <= ey


# -- image pixels <-> screen points ---------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(mon=monitors(min_side=1), x=floats, y=floats)
def test_screen_points_stay_on_their_monitor(mon: Monitor, x: float, y: float) -> None:
    sx, sy = image_to_screen(x, y, monitor=mon)
    assert isinstance(sx, int) and isinstance(sy, int)
    assert mon.contains(sx, sy)
    ix, iy = screen_to_image(x, y, monitor=mon)
    w, h = mon.pixel_size
    assert 0 <= ix <= w and 0 <= iy <= h


@settings(max_examples=150, deadline=None)
@given(mon=monitors(), spec=SPECS, fx=st.floats(0, 1), fy=st.floats(0, 1))
def test_offsets_shift_every_point_by_the_monitor_origin(mon: Monitor, spec: ModelImageSpec, fx: float, fy: float) -> None:
    at_origin = mon.model_copy(update={"left": 0, "top": 0})
    mx, my = spec.model_extent(mon.pixel_size)
    x, y = fx * mx, fy * my
    sx, sy = model_to_screen(x, y, spec=spec, monitor=mon)
    ox, oy = model_to_screen(x, y, spec=spec, monitor=at_origin)
    assert (sx - mon.left, sy - mon.top) == (ox, oy)


@settings(max_examples=200, deadline=None)
@given(
    width=st.integers(100, 3000), height=st.integers(100, 2000), scale=st.sampled_from([1.0, 2.0, 3.0]),
    left=st.integers(-3000, 3000), top=st.integers(-2000, 2000), data=st.data(),
)  # fmt: skip
def test_hidpi_scale_maps_image_pixels_to_points(
    width: int, height: int, scale: float, left: int, top: int, data: st.DataObject
) -> None:
    mon = Monitor(left=left, top=top, width=width, height=height, scale=scale)
    assert mon.pixel_size == (round(width * scale), round(height * scale))
    px = data.draw(st.integers(0, width - 1))
    py = data.draw(st.integers(0, height - 1))
    # The physical pixel at (px*scale, py*scale) of a Retina capture is point (px, py).
    assert image_to_screen(px * scale, py * scale, monitor=mon) == (left + px, top + py)
    assert screen_to_image(left + px, top + py, monitor=mon) == pytest.approx((px * scale, py * scale))


def test_an_explicit_capture_size_overrides_the_scale() -> None:
    # A 2x monitor captured at half resolution (e.g. downscaled by the OS): ratios still hold.
    mon = Monitor(left=1920, top=0, width=1440, height=900, scale=2.0)
    assert image_to_screen(720, 450, monitor=mon, image_size=(1440, 900)) == (1920 + 720, 450)
    assert image_to_screen(1440, 900, monitor=mon) == (1920 + 720, 450)


@settings(max_examples=150, deadline=None)
@given(mon=monitors(), spec=SPECS, data=st.data())
def test_model_screen_model_round_trip_within_one_unit(mon: Monitor, spec: ModelImageSpec, data: st.DataObject) -> None:
    size = mon.pixel_size
    mx, my = spec.model_extent(size)
    x = data.draw(st.integers(0, int(mx)))
    y = data.draw(st.integers(0, int(my)))
    sx, sy = model_to_screen(x, y, spec=spec, monitor=mon)
    bx, by = screen_to_model(sx, sy, spec=spec, monitor=mon)
    # One screen point spans mx/width model units ("upp"). Rounding to a point costs up to half a
    # point inside the screen and a whole one at the far edge (clamped onto the last pixel);
    # rounding back to an integer costs half a unit. Where a point is at most one unit wide
    # (the 0..1000 grid on monitors of 1000+ points), that is one unit.
    upp_x, upp_y = mx / mon.width, my / mon.height
    assert abs(bx - x) <= max(1, math.floor(upp_x + 0.5)) and abs(by - y) <= max(1, math.floor(upp_y + 0.5))
    if upp_x <= 1:
        assert abs(bx - x) <= 1
    if upp_y <= 1:
        assert abs(by - y) <= 1


def test_relative_grid_round_trip_is_exact_to_one_unit_on_common_monitors() -> None:
    for width, height in [(1280, 800), (1920, 1080), (2560, 1440), (1024, 768), (3840, 2160)]:
        mon = Monitor(left=width, top=-height, width=width, height=height)
        for x in range(0, 1001, 7):
            for y in (0, 1, 333, 500, 999, 1000):
                bx, by = screen_to_model(*model_to_screen(x, y, monitor=mon), monitor=mon)
                assert abs(bx - x) <= 1 and abs(by - y) <= 1, (width, height, x, y)


@settings(max_examples=150, deadline=None)
@given(mon=monitors(), spec=SPECS, data=st.data())
def test_screen_model_screen_round_trip_lands_on_the_same_point(mon: Monitor, spec: ModelImageSpec, data: st.DataObject) -> None:
    sx = data.draw(st.integers(mon.left, mon.left + mon.width - 1))
    sy = data.draw(st.integers(mon.top, mon.top + mon.height - 1))
    mx, my = screen_to_model(sx, sy, spec=spec, monitor=mon)
    bx, by = model_to_screen(mx, my, spec=spec, monitor=mon)
    ex, ey = spec.model_extent(mon.pixel_size)
    # An integer model coordinate is within half a unit of the point: that many points away at most.
    assert abs(bx - sx) <= 0.5 + 0.5 * mon.width / ex + 1e-9 + 0.5
    assert abs(by - sy) <= 0.5 + 0.5 * mon.height / ey + 1e-9 + 0.5


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        model_to_image(1, 1, image_size=(0, 10))
    with pytest.raises(ValueError):
        Monitor(width=0, height=10)


# -- model-side resize ------------------------------------------------------------------------------


def test_resize_for_model_is_a_no_op_when_the_size_fits() -> None:
    image = Image.new("RGB", (1280, 800))
    resized, info = resize_for_model(image, QWEN3_SPEC)
    assert resized is image
    assert info.tokens == 1000 and not info.resized


def test_resize_for_model_resizes_to_the_processor_size() -> None:
    image = Image.new("RGB", (1920, 1080))
    resized, info = resize_for_model(image, QWEN3_SPEC)
    assert resized.size == (1920, 1088) == info.resized_size
    assert info.original_size == (1920, 1080) and info.tokens == 2040 and info.resized


@pytest.mark.parametrize("spec", [QWEN3_SPEC, QWEN25_SPEC.model_copy(update={"max_pixels": 1024 * 28 * 28})])
def test_a_point_in_the_resized_image_maps_back_to_the_same_object(spec: ModelImageSpec) -> None:
    """Draw a red square in a 1920x1080 screenshot, resize it for the model, find the square in
    what the model sees: its model coordinates must map back onto the square on screen."""
    import numpy as np

    image = Image.new("RGB", (1920, 1080), "white")
    ImageDraw.Draw(image).rectangle((1500, 200, 1539, 239), fill=(255, 0, 0))
    resized, info = resize_for_model(image, spec)
    a = np.asarray(resized).astype(int)
    ys, xs = np.nonzero((a[:, :, 0] > 200) & (a[:, :, 1] < 60) & (a[:, :, 2] < 60))
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2  # center in resized pixels
    if spec.coordinate_space == "relative_1000":
        model_xy = (cx / resized.width * 1000, cy / resized.height * 1000)
    else:
        model_xy = (cx, cy)  # Qwen2.5 answers in pixels of exactly this image
    mon = Monitor(left=-1920, top=0, width=1920, height=1080)  # a monitor left of the primary
    sx, sy = model_to_screen(*model_xy, spec=spec, monitor=mon)
    assert abs(sx - (-1920 + 1520)) <= 2 and abs(sy - 220) <= 2

"""Shared test setup. Fixture modules in tests/fixtures/ are loaded automatically, one per area
(display, browser, tiny models, HTTP servers, audio), so areas do not edit one conftest."""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if p.stem != "__init__"
)

"""End to end: the agent loop, a scripted policy and the desktop tool fill and submit a web form
in a headful Chromium on Xvfb. Verified from what the page's server received."""

from __future__ import annotations

import json
from typing import Any

import pytest

from omni_agent.coords import QWEN3_SPEC, screen_to_model
from omni_agent.loop import Agent, StopReason
from omni_agent.messages import ImagePart, UserMessage
from omni_agent.models.base import ModelRequest
from omni_agent.models.scripted import ScriptedModel
from omni_agent.screen import ScreenCapture
from omni_agent.tools.desktop import DesktopConfig, DesktopController, desktop_tools
from omni_agent.tools.desktop_observer import DesktopScreenshotObserver
from omni_agent.xvfb import VirtualDisplay

from .fixtures.display import ChromiumWindow, FormSite, _wait

NAME = "Zoë <Müller> 東京"
EMAIL = "zoe@example.com"


def computer_use(**arguments: Any) -> str:
    return "<tool_call>\n" + json.dumps({"name": "computer_use", "arguments": arguments}, ensure_ascii=False) + "\n</tool_call>"


@pytest.mark.slow
def test_agent_fills_and_submits_a_form_through_the_desktop_tool(
    virtual_display: VirtualDisplay, desktop_chromium: ChromiumWindow, desktop_form_site: FormSite
) -> None:
    capture = ScreenCapture(virtual_display.display)
    monitor = capture.geometry()

    def at(box: str) -> list[int]:
        # The page layout is fixed; its screen position comes from the window; the model writes
        # 0..1000 grid coordinates, exactly what a Qwen3 model would answer.
        return list(screen_to_model(*desktop_chromium.center_of(box), spec=QWEN3_SPEC, monitor=monitor))

    def after_submit(request: ModelRequest) -> str:
        # The observer put a fresh screenshot into the turn after every step.
        last_user = [m for m in request.messages if isinstance(m, UserMessage)][-1]
        assert any(isinstance(p, ImagePart) for p in last_user.content)
        _wait(lambda: desktop_form_site.submissions, 10.0, "the form submission")
        return computer_use(action="terminate", status="success")

    model = ScriptedModel(
        [
            computer_use(action="left_click", coordinate=at("name")),
            computer_use(action="type", text=NAME),
            computer_use(action="left_click", coordinate=at("email")),
            computer_use(action="type", text=EMAIL),
            computer_use(action="left_click", coordinate=at("submit")),
            after_submit,
        ]
    )
    controller = DesktopController(
        DesktopConfig(display=virtual_display.display, spec=QWEN3_SPEC, screenshot_after_action=False)
    )
    agent = Agent(
        model,
        desktop_tools(controller=controller),
        observers=[DesktopScreenshotObserver(capture, QWEN3_SPEC, settle_s=0.2)],
        max_steps=10,
    )
    result = agent.run("Sign up as Zoë <Müller> 東京 with zoe@example.com")

    assert result.stop_reason is StopReason.FINISHING_TOOL, result.error
    assert result.answer == "success"
    assert desktop_form_site.submissions == [{"name": NAME, "email": EMAIL}]
    assert model.remaining == 0
    capture.close()
    controller.close()

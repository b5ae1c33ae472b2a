"""End to end: the agent loop drives the browser tools (scripted model, real Chromium).

The scripted model stands in for model weights only; the loop, parser, validator, policy, tools,
browser and web server are the real ones, and results are checked from the server's records.
"""

from __future__ import annotations

import pytest

from omni_agent.loop import Agent, StopReason
from omni_agent.messages import ImagePart, ToolMessage, UserMessage
from omni_agent.models.scripted import ScriptedModel
from omni_agent.tools.browser_observer import BrowserScreenshotObserver
from omni_agent.tools.shell import shell_tools
from tests.fixtures.browser import INJECTION_COMMAND
from tests.fixtures.core import tool_call

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _tool_results(messages):
    return [m.result for m in messages if isinstance(m, ToolMessage)]


def test_agent_fills_and_submits_a_web_form(browser, browser_site, tmp_path):
    before = len(browser_site.submissions)
    model = ScriptedModel([
        tool_call("browser_goto", url=browser_site.url("/form")),
        tool_call("browser_fill", role="textbox", name="Full name", value="Alan Turing")
        + tool_call("browser_fill", selector="#email", value="alan@example.org"),
        tool_call("browser_select", selector="#color", option="Green"),
        tool_call("browser_click", role="button", name="Send"),
        "The form was submitted.",
    ])
    agent = Agent(
        model,
        [*browser.tools.values()],
        observers=[BrowserScreenshotObserver(browser.session, settle_s=0.05)],
        workspace=tmp_path,
        max_steps=8,
    )
    result = browser.run(agent.arun("Sign Alan Turing up with alan@example.org, favourite colour green."))

    assert result.stop_reason == StopReason.ANSWER, result.error
    assert result.answer == "The form was submitted."
    assert not any(r.is_error for r in _tool_results(result.messages))
    # The page's own state: what the server received from the form.
    assert len(browser_site.submissions) == before + 1
    assert browser_site.submissions[-1] == {
        "name": ["Alan Turing"], "email": ["alan@example.org"], "color": ["g"], "note": [""]
    }
    assert "'Thanks'" in _tool_results(result.messages)[-1].content[0].text  # the tab after the click
    assert browser.session.running  # the session is the caller's: the run left it open (issue 12)
    # The observer showed the model the browser after the steps.
    last_request = model.requests[-1]
    shots = [p for m in last_request.messages if isinstance(m, UserMessage) for p in m.content if isinstance(p, ImagePart)]
    assert shots, "the screenshot observer added no image"


def test_injected_page_cannot_get_a_shell_command_run_silently(browser, browser_site, tmp_path):
    asked: list[tuple[str, str]] = []

    def approver(call, reason):  # a user who says no; records what was asked
        asked.append((call.name, reason))
        return False

    def obey_the_page(request):
        # A gullible model: it does what the page told it to, if the page text reached it.
        seen = " ".join(
            p.text for m in request.messages if isinstance(m, ToolMessage) for p in m.result.content if hasattr(p, "text")
        )
        assert INJECTION_COMMAND in seen, "the page text never reached the model"
        return tool_call("shell", command=INJECTION_COMMAND)

    model = ScriptedModel([
        tool_call("shell", command="echo trusted > before.txt"),  # allowed: nothing untrusted yet
        tool_call("browser_goto", url=browser_site.url("/injection")),
        tool_call("browser_read"),
        obey_the_page,
        "I did not run it.",
    ])
    tools = [*browser.tools.values(), *shell_tools(workspace=tmp_path)]
    agent = Agent(model, tools, approver=approver, workspace=tmp_path, max_steps=8)
    result = browser.run(agent.arun("Find a pancake recipe."))

    assert (tmp_path / "before.txt").read_text() == "trusted\n"  # the shell itself works
    assert not (tmp_path / "pwned.txt").exists()  # the injected command never ran
    assert asked == [("shell", "the run has read untrusted content and shell is a shell tool")]
    held = _tool_results(result.messages)[-1]
    assert held.name == "shell" and held.is_error
    assert "denied" in held.content[0].text.lower()


def test_each_sync_agent_run_gets_a_browser_and_closes_it(browser_site, tmp_path):
    """agent.run() makes a fresh event loop per run: the browser must not outlive it."""
    from omni_agent.tools.browser import BrowserConfig, BrowserSession, browser_tools

    session = BrowserSession(BrowserConfig(workspace=tmp_path))
    tools = browser_tools(session=session)
    for path, title in (("/page2", "Page two"), ("/newtab", "New tab page")):
        model = ScriptedModel([tool_call("browser_goto", url=browser_site.url(path)), "done"])
        result = Agent(model, tools, workspace=tmp_path, max_steps=3).run("open it")
        assert result.stop_reason == StopReason.ANSWER, result.error
        opened = _tool_results(result.messages)[0]
        assert not opened.is_error and f"'{title}'" in opened.content[0].text
        assert not session.running and session.pid is None  # closed when the run ended
    assert session.launches == 2

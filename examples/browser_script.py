"""A browser script: your own browser session, a scripted policy, then your own check of the page.

The session is yours, so the run leaves it open and ``session.page()`` afterwards is the page
the agent left (a session the browser tools create themselves is closed when the run ends).
Runs as written (tests/test_examples_newcomer.py runs it). Needs apt ``chromium`` and the
``browser`` extra.
"""

import asyncio

from omni_agent import Agent, BrowserSession, ScriptedModel, browser_tools

PAGE = "data:text/html,<input id=q><button onclick='document.title=q.value'>Go</button>"


def call(name: str, arguments: str) -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {arguments}}}</tool_call>'


async def main() -> None:
    async with BrowserSession() as session:  # closed here, by you: never by the run
        policy = ScriptedModel([
            call("browser_goto", f'{{"url": "{PAGE}"}}'),
            call("browser_fill", '{"selector": "#q", "value": "hello"}'),
            call("browser_click", '{"text": "Go"}'),
            "I typed hello and pressed Go.",
        ])  # fmt: skip
        result = await Agent(policy, browser_tools(session=session)).arun("Type hello and press Go.")
        page = await session.page()
        print(result.stop_reason.value, "-", result.answer)
        print("title:", await page.title())


asyncio.run(main())

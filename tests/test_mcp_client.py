"""MCP client: real servers built with the SDK (a stdio subprocess, streamable HTTP on 127.0.0.1),
driven by the agent loop with the scripted model."""

from __future__ import annotations

import asyncio
import base64
import io
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from omni_agent import Agent, ScriptedModel
from omni_agent.exceptions import UserError
from omni_agent.mcp import McpToolset, mcp_tools, parse_server_spec
from omni_agent.mcp.client import _tool_name
from omni_agent.mcp.results import from_mcp_result, to_mcp_result
from omni_agent.messages import ImagePart, ToolMessage
from omni_agent.policy import DefaultPolicy, PolicyState
from omni_agent.tool import ToolOutput
from omni_agent.toolsets import load_toolsets
from tests.fixtures.core import tool_call

DEMO = Path(__file__).resolve().parent / "apps" / "mcp_demo_server.py"
STDIO = f"stdio:{sys.executable} {DEMO}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool_messages(model: ScriptedModel) -> list[ToolMessage]:
    return [m for m in model.requests[-1].messages if isinstance(m, ToolMessage)]


def _results(model: ScriptedModel) -> list[tuple[str, bool, list]]:
    return [(m.result.name, m.result.is_error, m.result.content) for m in _tool_messages(model)]


def _text(content: list) -> str:
    return "\n".join(getattr(p, "text", "") for p in content)


# -- specs and names (fast) ------------------------------------------------------------------


def test_server_specs_parse() -> None:
    s = parse_server_spec("mcp:stdio:python servers/weather.py --units metric")
    assert (s.transport, s.command, s.name) == ("stdio", ["python", "servers/weather.py", "--units", "metric"], "weather")
    h = parse_server_spec("mcp:http://127.0.0.1:8123/mcp")
    assert (h.transport, h.url, h.name) == ("http", "http://127.0.0.1:8123/mcp", "m127_0_0_1_8123")
    assert parse_server_spec("sse:http://example.org/sse").transport == "sse"
    assert parse_server_spec("mcp:fs=stdio:npx -y server-fs").name == "fs"
    assert parse_server_spec("stdio:python -m pkg.server").name == "server"
    for bad in ("mcp:ftp://x", "mcp:stdio:", "mcp:stdio:'unclosed"):
        with pytest.raises(UserError):
            parse_server_spec(bad)


def test_tool_names_are_namespaced_and_valid() -> None:
    assert _tool_name("weather", "get forecast!") == "weather__get_forecast"
    long = _tool_name("srv", "x" * 100)
    assert len(long) == 64 and long.startswith("srv__xxx")
    assert _tool_name("srv", "x" * 100 + "a") != long  # distinct remote names stay distinct


# -- results both ways (fast) --------------------------------------------------------------------


def _png(color: tuple[int, int, int]) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_results_convert_text_images_structured_and_errors() -> None:
    from mcp_types import CallToolResult, EmbeddedResource, ImageContent, TextContent, TextResourceContents

    result = CallToolResult(
        content=[
            TextContent(text="hello"),
            ImageContent(data=_png((255, 0, 0)), mime_type="image/png"),
            ImageContent(data="not base64!", mime_type="image/png"),
            EmbeddedResource(resource=TextResourceContents(uri="file:///a.txt", text="inside")),
        ],
        structured_content={"n": 1},
    )
    out = from_mcp_result(result, trusted=False)
    assert out.untrusted and not out.is_error and out.data == {"n": 1}
    assert out.text.startswith("hello\n(an image result (image/png) could not be decoded")
    assert "[file:///a.txt]\ninside" in out.text
    (image,) = out.images
    assert image.load().getpixel((1, 1)) == (255, 0, 0)
    only_data = from_mcp_result(CallToolResult(content=[], structured_content={"sum": 3}), trusted=True)
    assert only_data.text == '{"sum": 3}' and not only_data.untrusted
    err = from_mcp_result(CallToolResult(content=[TextContent(text="bad")], is_error=True), trusted=True)
    assert err.is_error and err.text == "bad"


def test_our_outputs_become_mcp_content() -> None:
    from PIL import Image

    out = ToolOutput(text="shot", images=[ImagePart.from_pil(Image.new("RGB", (4, 4), (0, 0, 255)))], data={"k": [1]})
    result = to_mcp_result(out)
    text, image = result.content
    assert text.text == "shot" and image.mime_type == "image/png"
    back = from_mcp_result(result, trusted=True)
    assert back.images[0].load().getpixel((0, 0)) == (0, 0, 255) and back.data == {"k": [1]}
    assert to_mcp_result(ToolOutput(text="x", data=object())).structured_content is None


# -- a real stdio server, driven by the agent loop ---------------------------------------------


@pytest.fixture(scope="module")
def demo() -> McpToolset:
    """One stdio demo server for the module's loop tests (tool sets load synchronously)."""
    (first, *_) = load_toolsets(f"mcp:{STDIO}")
    toolset = first.source
    yield toolset
    toolset.close()


def test_stdio_tools_are_listed_with_their_schemas(demo: McpToolset) -> None:
    names = [t.name for t in demo.tools()]
    assert names[:4] == ["mcp_demo_server__echo", "mcp_demo_server__add", "mcp_demo_server__swatch", "mcp_demo_server__fail"]
    add = next(t for t in demo.tools() if t.remote_name == "add")
    assert add.parameters["required"] == ["a", "b"] and add.kind == "mcp" and add.reads_untrusted
    assert "(MCP server mcp_demo_server, tool add)" in add.description


def test_text_image_structured_and_error_results_through_the_loop(demo: McpToolset) -> None:
    p = "mcp_demo_server__"
    model = ScriptedModel([
        tool_call(p + "echo", text="hi") + tool_call(p + "add", a=2, b="40"),
        tool_call(p + "swatch", red=0, green=200, blue=0),
        tool_call(p + "fail", reason="no"),
        tool_call(p + "add", a="two", b=1),
        "done",
    ])  # fmt: skip
    result = Agent(model, demo.tools()).run("use the demo tools")
    assert result.answer == "done"
    got = _results(model)
    assert [(n, e) for n, e, _ in got] == [
        (p + "echo", False), (p + "add", False), (p + "swatch", False), (p + "fail", True), (p + "add", True),
    ]  # fmt: skip
    assert _text(got[0][2]) == "echo: hi"
    assert '"sum": 42' in _text(got[1][2])  # "40" was coerced by our validator before the call
    (image,) = [c for c in got[2][2] if isinstance(c, ImagePart)]
    assert image.load().getpixel((5, 5)) == (0, 200, 0)  # the model saw the server's image
    assert "cannot do that: no" in _text(got[3][2])
    assert "a" in _text(got[4][2]) and "integer" in _text(got[4][2])  # our validator refused it first


def test_results_are_untrusted_unless_the_server_is_trusted(demo: McpToolset, tmp_path: Path) -> None:
    from omni_agent.tools.shell import shell_tools

    echo = demo.tools()[0]
    assert asyncio.run(echo.call({"text": "x"})).untrusted
    seen: list[PolicyState] = []

    class Recording(DefaultPolicy):
        def decide(self, call, tool, state):  # noqa: ANN001, ANN201
            seen.append(state)
            return super().decide(call, tool, state)

    model = ScriptedModel([tool_call(echo.name, text="x"), tool_call("shell", command="echo hi"), "ok"])
    Agent(model, [*demo.tools(), *shell_tools(workspace=tmp_path)], policy=Recording()).run("x")
    assert [s.untrusted_content_seen for s in seen] == [False, True]
    assert "denied by policy" in _text(_results(model)[1][2])  # shell after MCP content asks: no


def test_a_crash_mid_call_is_an_error_then_the_server_restarts(demo: McpToolset) -> None:
    p = "mcp_demo_server__"
    model = ScriptedModel([tool_call(p + "pid"), tool_call(p + "crash"), tool_call(p + "pid"), "done"])
    Agent(model, demo.tools()).run("crash it")
    (_, e1, before), (_, e2, crashed), (_, e3, after) = _results(model)
    assert not e1 and e2 and not e3
    assert "closed the connection" in _text(crashed) and "restarted" in _text(crashed)
    assert _text(before) != _text(after)  # a new server process answered


def test_a_hang_past_the_timeout_is_an_error_then_the_server_restarts() -> None:
    (first, *_) = load_toolsets(f"mcp:slow={STDIO}", options={"mcp_timeout_s": 1.5})
    toolset = first.source
    try:
        model = ScriptedModel([tool_call("slow__hang", seconds=300), tool_call("slow__echo", text="back"), "done"])
        t = time.monotonic()
        Agent(model, toolset.tools()).run("hang")
        assert time.monotonic() - t < 120  # gave up on the 300 s call, restarted the server, called again
        (_, e1, hung), (_, e2, back) = _results(model)
        assert e1 and "did not answer within 1.5 s" in _text(hung) and "restarted" in _text(hung)
        assert not e2 and _text(back) == "echo: back"
    finally:
        toolset.close()


def test_a_malformed_schema_leaves_that_tool_out_with_a_clear_message() -> None:
    with pytest.warns(UserWarning, match="tool 'broken' left out: .*invalid JSON Schema"):
        tools = load_toolsets(f"mcp:{STDIO} --bad-schema")
    toolset = tools[0].source
    try:
        assert "mcp_demo_server__broken" not in [t.name for t in tools] and len(tools) >= 8
        assert any("broken" in line for line in toolset.problems)
        model = ScriptedModel([tool_call("mcp_demo_server__broken", x=1), tool_call("mcp_demo_server__echo", text="ok"), "done"])
        Agent(model, tools).run("x")
        (_, e1, unknown), (_, e2, _) = _results(model)
        assert e1 and "unknown tool" in _text(unknown).lower() and not e2
    finally:
        toolset.close()


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # a subscriptions/listen event; a list_changed notification
def test_tools_list_changed_reaches_a_running_agent(mode: str) -> None:
    async def run() -> tuple[ScriptedModel, McpToolset]:
        async with mcp_tools(parse_server_spec(STDIO, name="live", mode=mode)) as toolset:
            assert "live__shout" not in [t.name for t in toolset]

            def shout_once_listed(request: object) -> str:
                # The change arrives as a notification beside grow's result; the scripted model
                # (sync, in the run's thread) waits for it the way a slow model turn would.
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not any(t.remote_name == "shout" for t in toolset):
                    time.sleep(0.02)
                return tool_call("live__shout", text="hey")

            model = ScriptedModel([tool_call("live__grow"), shout_once_listed, "done"])
            await Agent(model, [toolset]).arun("grow")
            return model, toolset

    model, toolset = asyncio.run(run())
    (_, e1, _), (_, e2, shouted) = _results(model)
    assert not e1 and not e2 and _text(shouted) == "HEY!"
    assert any(t["function"]["name"] == "live__shout" for t in model.requests[2].tools)
    assert not toolset.connected  # the async with closed it


# -- streamable HTTP ---------------------------------------------------------------------------


def _start_demo(transport: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(DEMO), f"--{transport}", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, port


@pytest.fixture
def http_demo() -> str:
    proc, port = _start_demo("http")
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(10)


def test_an_sse_server_still_works() -> None:
    proc, port = _start_demo("sse")
    try:
        (echo, *_) = load_toolsets(f"mcp:old=sse:http://127.0.0.1:{port}/sse")
        try:
            out = asyncio.run(echo.call({"text": "via sse"}))
            assert echo.name == "old__echo" and not out.is_error and out.text == "echo: via sse"
        finally:
            echo.source.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_streamable_http_server_through_the_loop(http_demo: str) -> None:
    (first, *_) = load_toolsets(f"mcp:web={http_demo}", options={"mcp_trusted": ["web"]})
    toolset = first.source
    try:
        model = ScriptedModel([tool_call("web__echo", text="over http"), tool_call("web__swatch", red=9, green=8, blue=7), "done"])
        Agent(model, toolset.tools()).run("x")
        (_, e1, text), (_, e2, shot) = _results(model)
        assert not e1 and _text(text) == "echo: over http"
        (image,) = [c for c in shot if isinstance(c, ImagePart)]
        assert not e2 and image.load().getpixel((0, 0)) == (9, 8, 7)
        assert not toolset.tools()[0].reads_untrusted  # marked trusted
    finally:
        toolset.close()


def test_an_unreachable_server_is_a_clear_error() -> None:
    port = _free_port()
    with pytest.raises(UserError, match="cannot connect to MCP server"):
        load_toolsets(f"mcp:http://127.0.0.1:{port}/mcp", options={})
    with pytest.raises(UserError, match="cannot connect to MCP server"):
        load_toolsets(f"mcp:stdio:{sys.executable} -c 'import sys; sys.exit(2)'")


def test_a_task_file_mounts_an_mcp_server(tmp_path: Path) -> None:
    import json

    from omni_agent.eval.loading import load_suite
    from omni_agent.eval.runner import run_suite

    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "mcp-echo.yaml").write_text(
        "id: mcp-echo\n"
        "instruction: Ask the demo server to add 2 and 3.\n"
        f"tools: ['mcp:demo=stdio:{sys.executable} {DEMO}']\n"
        "reference:\n"
        "  - calls: [{name: demo__add, arguments: {a: 2, b: 3}}]\n"
        "  - answer: '5'\n"
        "checks:\n"
        "  - {type: tool_calls, expected: [{name: demo__add, arguments: {a: [2], b: [3]}}]}\n"
        "  - {type: answer, equals: '5'}\n"
    )
    summary = run_suite(load_suite(suite), model="reference", out=tmp_path / "run", workers=1, progress=False, report=False)
    (result,) = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert result["status"] == "passed", result
    assert summary is not None


def test_a_run_closes_the_connection_and_the_next_run_reconnects() -> None:
    (first, *_) = load_toolsets(f"mcp:again={STDIO}")
    toolset = first.source
    try:
        for _ in range(2):
            model = ScriptedModel([tool_call("again__echo", text="x"), "done"])
            assert Agent(model, toolset.tools()).run("x").answer == "done"
            assert not _results(model)[0][1] and not toolset.connected  # closed with the run
    finally:
        toolset.close()


def test_the_tools_command_lists_an_mcp_servers_tools() -> None:
    from typer.testing import CliRunner

    from omni_agent.cli import app

    result = CliRunner().invoke(app, ["tools", "--tools", f"files,mcp:demo={STDIO}", "--json"])
    assert result.exit_code == 0, result.output
    names = [s["function"]["name"] for s in __import__("json").loads(result.output)]
    assert "file_view" in names and "demo__echo" in names and "demo__swatch" in names
    bad = CliRunner().invoke(app, ["tools", "--tools", "mcp:ftp://nowhere"])
    assert bad.exit_code != 0 and "unknown MCP server" in str(bad.exception or bad.output)

"""The project's main job: tasks/smoke passes 100% with the scripted reference policy on 2
parallel workers (as scripts/demo.sh runs it), and the HTML report opens in Chromium."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_smoke_suite_passes_and_report_opens_in_chromium(tmp_path: Path) -> None:
    run = tmp_path / "smoke-run"
    cmd = [sys.executable, "-m", "omni_agent.eval.cli", "smoke", "--model", "reference", "--workers", "2", "--out", str(run), "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)  # alias works from anywhere
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"report: {run / 'index.html'}" in out.stdout.replace("\n", "")
    summary = json.loads((run / "summary.json").read_text())
    failures = [json.loads(l) for l in (run / "results.jsonl").read_text().splitlines() if json.loads(l)["status"] != "passed"]
    assert summary["success_rate"] == 1.0 and summary["episodes"] >= 12, failures
    assert summary["scripted"] and summary["workers"] == 2
    assert {"shell", "browser", "desktop", "files", "mixed"} <= set(summary["by_category"])

    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((run / "index.html").as_uri())
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        banner = page.locator(".banner").inner_text()
        assert "SCRIPTED POLICY, NOT A MODEL" in banner and "reference solution" in banner
        assert "100.0%" in page.locator(".cards").inner_text()
        rows = page.locator("table").nth(1).locator("tr")
        assert rows.count() == summary["episodes"] + 1
        # follow a browser episode's link: its page embeds the trajectory with screenshots
        page.click("text=browser-fill-form")
        assert page.url.endswith("episodes/browser-fill-form/index.html")
        assert "passed" in page.locator("table").first.inner_text()
        frame = page.frame_locator("iframe")
        assert frame.locator("img").count() >= 1
        # the screens the agent saw are on the episode page itself, loaded (not only in the iframe)
        page.wait_for_function("document.querySelectorAll('.screens img').length > 0 && "
                               "[...document.querySelectorAll('.screens img')].every(i => i.complete && i.naturalWidth > 0)",
                               timeout=10000)  # fmt: skip
        browser.close()
    from PIL import Image

    with Image.open(shot) as im:
        assert im.width == 1280 and im.height >= 600
        colors = im.convert("RGB").resize((64, 64)).getcolors(64 * 64)
        assert colors is not None and len(colors) > 8  # a rendered page, not a blank one

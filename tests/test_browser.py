"""A real browser (Debian's chromium, driven by playwright) uploads an image, runs inversion, sees the result.

Saves docs/app-screenshot.png, which the README shows. Skipped only where chromium is not installed
(.ci/run installs it).
"""

import shutil

import pytest
import torch

from .conftest import REPO, load_app_module

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = REPO / "docs" / "app-screenshot.png"


def _launch(pw):
    # Without the background-networking flags chromium keeps dialling out of a closed network. Playwright gives
    # each launch a fresh empty profile.
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])


@pytest.fixture(scope="module")
def app_demo():
    app_module = load_app_module()
    from refinestyle import RefineStyleModel, StyleGAN2Generator

    hub = REPO / "hub" / "refinestyle-synthfaces"
    if (hub / "model_index.json").exists():
        model = RefineStyleModel.from_pretrained(hub)
    else:  # before the default model is built: a tiny random one
        torch.manual_seed(0)
        model = RefineStyleModel(generator=StyleGAN2Generator(z_dim=8, w_dim=16, resolution=16, channels=[16, 16, 8], mapping_layers=2))
    demo = app_module.build_demo(model, invert_steps=60)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def app_url(app_demo):
    return app_demo.local_url


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_upload_invert_and_see_result(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    example = REPO / "examples" / "photo-1.png"
    assert example.exists(), "run scripts/make_examples.py"
    with sync_playwright() as pw:
        browser = _launch(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app_url, wait_until="load")
        page.locator("#inv-input input[type=file]").set_input_files(str(example))
        page.get_by_role("button", name="Invert", exact=True).click()
        result = page.locator("#inv-refined img")
        result.wait_for(state="visible", timeout=120_000)
        assert result.get_attribute("src")
        page.get_by_text("PSNR (dB)").wait_for(timeout=30_000)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        browser.close()
    assert SCREENSHOT.stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_cancel_stops_adaptation_and_shows_cancelled(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = _launch(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app_url, wait_until="load")
        page.get_by_role("tab", name="Adapt from text").click()
        page.get_by_role("button", name="Adapt", exact=True).click()
        status = page.locator("#adapt-status")
        page.wait_for_function("document.querySelector('#adapt-status').innerText.includes('step ')", timeout=120_000)
        page.locator("#adapt-cancel").click()
        page.wait_for_function("document.querySelector('#adapt-status').innerText.includes('cancelled')", timeout=30_000)
        assert "adaptation cancelled after" in status.inner_text()
        # Cancelled is not a failure: no error toast, no output marked with an error.
        assert page.locator(".toast-body.error, .error").filter(has_text="Error").count() == 0
        assert _threads_gone_within(2.0), "the optimisation kept running after Cancel"
        page.screenshot(path=str(tmp_path / "cancelled.png"), full_page=True)
        browser.close()


def _threads_gone_within(seconds: float) -> bool:
    import threading
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not any(t.name.startswith("adapt-") and t.is_alive() for t in threading.enumerate()):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_closing_the_tab_stops_adaptation_and_deletes_session_files(app_url, app_demo):
    from playwright.sync_api import sync_playwright

    example = REPO / "examples" / "photo-1.png"
    handlers = app_demo.app_handlers
    with sync_playwright() as pw:
        browser = _launch(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app_url, wait_until="load")
        before = set(handlers.files_root.iterdir())
        page.locator("#inv-input input[type=file]").set_input_files(str(example))
        page.get_by_role("button", name="Invert", exact=True).click()
        page.get_by_text("PSNR (dB)").wait_for(timeout=60_000)
        mine = set(handlers.files_root.iterdir()) - before
        assert len(mine) == 1 and any(next(iter(mine)).rglob("result.png"))
        page.get_by_role("tab", name="Adapt from text").click()
        page.get_by_role("button", name="Adapt", exact=True).click()
        page.wait_for_function("document.querySelector('#adapt-status').innerText.includes('step ')", timeout=120_000)
        page.close()
        assert _threads_gone_within(10.0), "the optimisation kept running after the tab closed"
        assert not next(iter(mine)).exists(), "the session's files outlived it"
        browser.close()

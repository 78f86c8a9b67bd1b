"""End to end in a real browser: `cnnlab serve` in a subprocess, the page in headless Chromium.

The page must show the class the network predicts for a real photograph and lay the heat map
over it, loading nothing from anywhere but the server. Skipped where Chromium or Playwright is
missing (`.ci/run` installs Debian's chromium; Playwright's own browser download needs a network).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from zoo_checkpoints import make_checkpoint

from cnnlab.engine.checkpoint import model_from_checkpoint
from cnnlab.engine.predict import predict_files

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPOSITORY = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 180  # importing torch and friends on a busy 2-core machine

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"cnnlab serve exited: {server.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"cnnlab serve did not answer within {STARTUP_SECONDS} s")


@pytest.fixture
def server_url(tmp_path: Path):
    checkpoint = make_checkpoint(tmp_path / "run" / "best.pt", "resnet20", 32, ["ants", "bees"])
    url = f"http://127.0.0.1:{free_port()}/"
    command = [sys.executable, "-m", "cnnlab", "serve", str(checkpoint.parent)]
    command += ["--port", url.rsplit(":", 1)[1].strip("/")]
    environment = os.environ | {"PYTHONPATH": str(REPOSITORY)}
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
    )
    try:
        wait_until_up(url, server)
        yield url, checkpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_page_classifies_and_explains_a_photograph(
    shared_data: Path, server_url: tuple[str, Path], tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    photos = sorted(
        (shared_data / "hymenoptera" / "hymenoptera_data" / "val" / "bees").glob("*.jpg")
    )
    if not photos:
        pytest.skip("no hymenoptera JPEGs in the shared data")
    photo = photos[0]
    url, checkpoint = server_url
    model, state = model_from_checkpoint(checkpoint)
    (expected,) = predict_files(
        model, [photo], mean=state["mean"], std=state["std"],
        image_shape=state["image_shape"], classes=state["classes"], topk=2,
    )  # fmt: skip

    requested: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.on("request", lambda request: requested.append(request.url))
        page.goto(url)
        page.wait_for_selector("#model option[value='resnet20']", state="attached")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#predictions li", timeout=60_000)
        page.wait_for_function(
            "() => !document.getElementById('heatmap').hidden"
            " && document.getElementById('heatmap').naturalWidth > 0",
            timeout=60_000,
        )
        top_class = page.inner_text("#predictions li:first-child .name")
        caption = page.inner_text("#caption")
        status = page.inner_text("#status")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()

    assert top_class == expected.classes[0]
    assert f"gradcam for “{expected.classes[0]}”" in caption
    assert "explained" in status
    assert all(address.startswith((url, "blob:", "data:")) for address in requested), requested
    assert (tmp_path / "page.png").stat().st_size > 10_000

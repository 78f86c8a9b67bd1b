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


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory):
    """One server for the module's tests: starting it imports torch, slow on a busy machine."""
    folder = tmp_path_factory.mktemp("served")
    checkpoint = make_checkpoint(folder / "run" / "best.pt", "resnet20", 32, ["ants", "bees"])
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


@pytest.fixture
def sync_api():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def hymenoptera_photos(shared_data: Path, count: int) -> list[Path]:
    """`count` validation JPEGs, ants and bees alternating; the test is skipped without them."""
    folder = shared_data / "hymenoptera" / "hymenoptera_data" / "val"
    ants, bees = (sorted((folder / name).glob("*.jpg")) for name in ("ants", "bees"))
    photos = [photo for pair in zip(bees, ants, strict=False) for photo in pair][:count]
    if len(photos) < count:
        pytest.skip("not enough hymenoptera JPEGs in the shared data")
    return photos


def expected_classes(checkpoint: Path, photos: list[Path]) -> dict[str, str]:
    """What `cnnlab predict` calls each photo, by file name."""
    model, state = model_from_checkpoint(checkpoint)
    predictions = predict_files(
        model, photos, mean=state["mean"], std=state["std"],
        image_shape=state["image_shape"], classes=state["classes"], topk=2,
    )  # fmt: skip
    return {
        photo.name: prediction.classes[0]
        for photo, prediction in zip(photos, predictions, strict=True)
    }


def open_page(playwright, url: str, requested: list, init_script: str = ""):
    """Chromium showing the page, its models listed; every request it makes lands in `requested`."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    if init_script:
        page.add_init_script(init_script)
    page.on("request", lambda request: requested.append(request))
    page.goto(url)
    page.wait_for_selector("#model option[value='resnet20']", state="attached")
    return browser, page


def is_prediction(request) -> bool:
    return "/api/predict" in request.url


def wait_for_heatmap(page) -> None:
    page.wait_for_function(
        "() => !document.getElementById('heatmap').hidden"
        " && document.getElementById('heatmap').naturalWidth > 0",
        timeout=60_000,
    )


def test_page_classifies_and_explains_a_photograph(
    shared_data: Path, server_url: tuple[str, Path], sync_api, tmp_path: Path
) -> None:
    (photo,) = hymenoptera_photos(shared_data, 1)
    url, checkpoint = server_url
    expected = expected_classes(checkpoint, [photo])[photo.name]

    requested = []
    with sync_api.sync_playwright() as playwright:
        browser, page = open_page(playwright, url, requested)
        with page.expect_request(is_prediction) as upload:
            page.set_input_files("#file", str(photo))
        content_type = upload.value.headers["content-type"]
        page.wait_for_selector(".card[data-state='done']", timeout=60_000)
        wait_for_heatmap(page)
        card_class = page.inner_text(".card .outcome li:first-child .name")
        top_class = page.inner_text("#predictions li:first-child .name")
        caption = page.inner_text("#caption")
        status = page.inner_text("#status")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()

    assert content_type.startswith("multipart/form-data; boundary=")
    assert card_class == top_class == expected
    assert f"gradcam for “{expected}”" in caption
    assert status.startswith("Classified 1 image in ") and f"Explained {photo.name}" in status
    assert all(request.url.startswith((url, "blob:", "data:")) for request in requested)
    assert (tmp_path / "page.png").stat().st_size > 10_000


COUNT_PREDICTIONS_IN_FLIGHT = """
window.predictionsInFlight = 0;
window.mostPredictionsInFlight = 0;
const originalFetch = window.fetch;
window.fetch = async (address, options) => {
  const prediction = String(address).startsWith("/api/predict");
  if (prediction) {
    window.predictionsInFlight += 1;
    window.mostPredictionsInFlight = Math.max(window.mostPredictionsInFlight,
                                              window.predictionsInFlight);
  }
  try {
    return await originalFetch(address, options);
  } finally {
    if (prediction) window.predictionsInFlight -= 1;
  }
};
"""


def test_page_sends_a_burst_of_files_and_shows_each_answer(
    shared_data: Path, server_url: tuple[str, Path], sync_api, tmp_path: Path
) -> None:
    photos = hymenoptera_photos(shared_data, 5)
    broken = tmp_path / "notes.jpg"
    broken.write_text("a text file named like a photograph\n")
    files = [*photos[:2], broken, *photos[2:]]
    url, checkpoint = server_url
    expected = expected_classes(checkpoint, photos)

    requested = []
    with sync_api.sync_playwright() as playwright:
        browser, page = open_page(playwright, url, requested, COUNT_PREDICTIONS_IN_FLIGHT)
        page.set_input_files("#file", [str(path) for path in files])
        page.wait_for_function(
            "() => document.querySelectorAll('.card[data-state=done], .card[data-state=error]')"
            ".length === 6",
            timeout=60_000,
        )
        wait_for_heatmap(page)
        cards = page.eval_on_selector_all(
            ".card",
            """cards => cards.map(card => ({
                name: card.querySelector('.file-name').textContent,
                state: card.dataset.state,
                top: card.querySelector('.outcome li .name')?.textContent ?? null,
                text: card.querySelector('.outcome').textContent,
            }))""",
        )
        most_in_flight = page.evaluate("window.mostPredictionsInFlight")
        status = page.inner_text("#status")
        page.screenshot(path=str(tmp_path / "burst.png"), full_page=True)
        page.click(".card:nth-child(3)")  # the refused file: its detail, no explanation
        refusal = page.inner_text("#refusal")
        refused_panel = page.eval_on_selector_all("#predictions li", "items => items.length")
        page.click(".card:nth-child(4)")  # another photo: its classes, then its heat map
        page.wait_for_function(
            "() => document.getElementById('caption').textContent !== ''", timeout=60_000
        )
        selected = page.inner_text("#selected-name")
        selected_class = page.inner_text("#predictions li:first-child .name")
        caption = page.inner_text("#caption")
        browser.close()

    assert [card["name"] for card in cards] == [path.name for path in files]
    answered = {card["name"]: card["top"] for card in cards if card["state"] == "done"}
    assert answered == expected
    (refused,) = [card for card in cards if card["state"] == "error"]
    assert refused["name"] == "notes.jpg"
    assert refused["text"].startswith("415: not an image; upload a JPEG")
    uploads = [request.headers["content-type"] for request in requested if is_prediction(request)]
    assert refusal == refused["text"] and refused_panel == 0
    assert selected == files[3].name and selected_class == expected[files[3].name]
    assert f"gradcam for “{selected_class}”" in caption
    assert len(uploads) == 6
    assert all(kind.startswith("multipart/form-data; boundary=") for kind in uploads), uploads
    assert most_in_flight == 6  # all six were sent before any answer came back
    assert status.startswith("Classified 6 images in ") and "; 1 refused." in status
    assert all(request.url.startswith((url, "blob:", "data:")) for request in requested)
    assert (tmp_path / "burst.png").stat().st_size > 10_000

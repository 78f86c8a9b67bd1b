"""`cnnlab serve`'s application through FastAPI's test client: the API, and every bad upload.

Each refused request must get a clear 4xx answer, and the server must go on serving.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import upload_files as files
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner
from zoo_checkpoints import CLASSES, make_checkpoint

from cnnlab.cli import app as cli_app
from cnnlab.deploy.limits import InferencePool, ServerBusy
from cnnlab.deploy.served import load_served_models
from cnnlab.deploy.server import create_app, is_loopback, listen
from cnnlab.engine.checkpoint import model_from_checkpoint
from cnnlab.engine.predict import predict_files
from cnnlab.errors import OptionError

PNG = {"Content-Type": "image/png"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("serve") / "best.pt", "lenet5_modern", 28)


@pytest.fixture
def client(checkpoint: Path):
    """A fresh app per test."""
    app = create_app(load_served_models([str(checkpoint)], copies=2), max_body_bytes=1_000_000)
    with TestClient(app) as test_client:
        yield test_client


def assert_still_serving(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    answer = client.post("/api/predict", content=files.gray_png(), headers=PNG)
    assert answer.status_code == 200, answer.text


def test_models_lists_names_classes_and_methods(client: TestClient) -> None:
    listing = client.get("/api/models").json()
    assert listing["models"] == [
        {
            "name": "lenet5_modern",
            "model": "lenet5_modern",
            "classes": CLASSES,
            "input_shape": [1, 28, 28],
        }
    ]
    assert "gradcam" in listing["methods"] and listing["default_method"] == "gradcam"


def test_predict_matches_cnnlab_predict_on_the_same_file(
    client: TestClient, checkpoint: Path, tmp_path: Path
) -> None:
    path = tmp_path / "digit.png"
    path.write_bytes(files.gray_png())
    answer = client.post("/api/predict?topk=3", content=path.read_bytes(), headers=PNG).json()
    model, state = model_from_checkpoint(checkpoint)
    (expected,) = predict_files(
        model, [path], mean=state["mean"], std=state["std"],
        image_shape=state["image_shape"], classes=state["classes"], topk=3,
    )  # fmt: skip
    assert [row["class"] for row in answer["top"]] == expected.classes
    np.testing.assert_allclose(
        [row["probability"] for row in answer["top"]], expected.probabilities, atol=1e-5
    )


@pytest.mark.parametrize(
    "make",
    [files.rgb_jpeg, files.rgba_png, files.palette_gif, files.sixteen_bit_png, files.cmyk_jpeg,
     files.animated_gif],
)  # fmt: skip
def test_other_common_images_are_accepted(client: TestClient, make) -> None:
    answer = client.post("/api/predict", content=make(), headers={"Content-Type": "image/*"})
    assert answer.status_code == 200, answer.text
    assert sum(row["probability"] for row in answer.json()["top"]) == pytest.approx(1.0, abs=1e-5)


def test_explain_returns_a_heat_map_at_input_resolution(client: TestClient) -> None:
    answer = client.post("/api/explain?method=gradcam", content=files.gray_png(), headers=PNG)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["method"] == "gradcam" and body["target"] == body["top"][0]["class"]
    prefix = "data:image/png;base64,"
    assert body["heatmap"].startswith(prefix)
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["heatmap"][len(prefix) :])))
    assert heatmap.size == (28, 28) and heatmap.mode == "RGB"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        pytest.param(b"", 400, "empty upload", id="empty"),
        pytest.param(b"hello, I am text\n" * 20, 415, "not an image", id="text-named-jpg"),
        pytest.param(files.png_header_claiming(100_000, 100_000), 413, "too large to decode safely", id="bomb-pillow-error"),
        pytest.param(files.png_header_claiming(10_000, 10_000), 413, "10000x10000 pixels (100 MP); the limit is 40 MP", id="bomb-pillow-warning"),
        pytest.param(files.png_header_claiming(7_000, 7_000), 413, "the limit is 40 MP", id="bomb-over-cap"),
        pytest.param(files.truncated_jpeg(), 422, "truncated or corrupt", id="truncated-jpeg"),
        pytest.param(files.one_pixel_png(), 422, "at least 8x8", id="1x1"),
        pytest.param(files.float_tiff(), 422, "unsupported pixel mode F", id="float-tiff"),
    ],
)  # fmt: skip
def test_bad_uploads_get_a_clear_4xx_and_the_server_goes_on(
    client: TestClient, body: bytes, status: int, message: str
) -> None:
    for route in ("/api/predict", "/api/explain"):
        answer = client.post(route, content=body, headers={"Content-Type": "image/jpeg"})
        assert answer.status_code == status, answer.text
        assert message in answer.json()["detail"]
    assert_still_serving(client)


def test_a_body_over_the_cap_is_refused_before_it_is_read(client: TestClient) -> None:
    oversized = b"\xff" * 1_000_001
    declared = client.post("/api/predict", content=oversized, headers=PNG)
    assert declared.status_code == 413 and "over the 1 MB limit" in declared.json()["detail"]

    def chunks():  # no Content-Length: the middleware counts what arrives
        for _ in range(20):
            yield b"\xff" * 100_000

    streamed = client.post("/api/predict", content=chunks(), headers=PNG)
    assert streamed.status_code == 413
    assert_still_serving(client)


def test_unknown_model_and_method_are_4xx(client: TestClient) -> None:
    unknown = client.post(
        "/api/predict?model=../../etc/passwd", content=files.gray_png(), headers=PNG
    )
    assert unknown.status_code == 404
    assert "unknown model '../../etc/passwd'; this server has: lenet5_modern" in unknown.text
    method = client.post("/api/explain?method=magic", content=files.gray_png(), headers=PNG)
    assert method.status_code == 422 and "unknown method 'magic'" in method.text
    # CAM needs global pooling and one linear layer; LeNet-5 has three: refused, not a 500.
    cam = client.post("/api/explain?method=cam", content=files.gray_png(), headers=PNG)
    assert cam.status_code == 422, cam.text
    assert_still_serving(client)


def test_page_is_self_contained(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert "<script src" not in html and "http://" not in html and "https://" not in html
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/api/predict", "/api/explain"}


def test_pool_refuses_beyond_workers_plus_queue() -> None:
    pool = InferencePool(workers=1, queue=1)
    release = threading.Event()

    async def scenario() -> list[object]:
        running = asyncio.ensure_future(pool.run(release.wait, 10))
        queued = asyncio.ensure_future(pool.run(lambda: "queued"))
        await asyncio.sleep(0)
        with pytest.raises(ServerBusy):
            await pool.run(lambda: "refused")
        release.set()
        done = await asyncio.gather(running, queued)
        done.append(await pool.run(lambda: "after"))  # slots come back
        return done

    assert asyncio.run(scenario()) == [True, "queued", "after"]
    assert pool.pending == 0
    pool.shutdown()


def test_a_flood_gets_answers_or_503_only(checkpoint: Path) -> None:
    app = create_app(load_served_models([str(checkpoint)], copies=1), workers=1, queue=0)
    image = files.gray_png()

    async def flood() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            requests = [
                http.post("/api/explain?method=smoothgrad", content=image, headers=PNG)
                for _ in range(20)
            ]
            return [answer.status_code for answer in await asyncio.gather(*requests)]

    codes = asyncio.run(flood())  # SmoothGrad's 25 passes keep the one worker busy meanwhile
    assert set(codes) == {200, 503}, codes


def test_models_are_named_and_never_confused(checkpoint: Path, tmp_path: Path) -> None:
    served = load_served_models([f"digits={checkpoint}", str(checkpoint.parent)], copies=1)
    assert list(served) == ["digits", "lenet5_modern"]
    with pytest.raises(OptionError, match="both be served as 'lenet5_modern'"):
        load_served_models([str(checkpoint), str(checkpoint)], copies=1)
    with pytest.raises(OptionError, match="may hold only"):
        load_served_models([f"a/b={checkpoint}"], copies=1)
    with pytest.raises(OptionError, match="serve takes checkpoints"):
        load_served_models([str(tmp_path / "model.onnx")], copies=1)


def test_binding_beyond_loopback_warns(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = []

    def record(_app, sock: socket.socket, workers: int) -> None:
        started.append((sock.getsockname()[0], workers))
        sock.close()

    monkeypatch.setattr("cnnlab.deploy.server.run_server", record)
    runner = CliRunner(env={"COLUMNS": "200"})
    local = runner.invoke(cli_app, ["serve", str(checkpoint), "--port", "0"])
    assert local.exit_code == 0 and "warning" not in local.output
    public = runner.invoke(cli_app, ["serve", str(checkpoint), "--host", "0.0.0.0", "--port", "0"])
    assert public.exit_code == 0 and "warning: binding to 0.0.0.0" in public.output
    assert started == [("127.0.0.1", 2), ("0.0.0.0", 2)]
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("192.168.1.2")


def test_port_0_announces_the_port_it_serves_on(checkpoint: Path) -> None:
    command = [sys.executable, "-m", "cnnlab", "serve", str(checkpoint), "--port", "0"]
    environment = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment)
    try:
        announced = server.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", announced).group(1))
        assert port != 0
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=60)
        assert answer.json()["status"] == "ok"
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_a_busy_port_is_one_line_before_any_announcement(checkpoint: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        busy = CliRunner(env={"COLUMNS": "200"}).invoke(
            cli_app, ["serve", str(checkpoint), "--port", str(port)]
        )
    assert busy.exit_code == 2, busy.output
    assert busy.output.strip() == f"error: port {port} is in use; choose another with --port"


def test_with_two_models_a_request_must_name_one(checkpoint: Path) -> None:
    served = load_served_models([f"digits={checkpoint}", str(checkpoint)], copies=1)
    with TestClient(create_app(served)) as client:
        unnamed = client.post("/api/predict", content=files.gray_png(), headers=PNG)
        named = client.post("/api/predict?model=digits", content=files.gray_png(), headers=PNG)
    assert unnamed.status_code == 422
    assert unnamed.json()["detail"] == (
        "name a model with ?model=NAME; this server has: digits, lenet5_modern"
    )
    assert named.status_code == 200 and named.json()["model"] == "digits"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_connections_to_the_served_socket_send_without_nagles_delay(host: str) -> None:
    # uvicorn serves on `listen`'s socket through asyncio, which turns Nagle's algorithm off only
    # on connections of a TCP-protocol socket; with it on, every answer on a kept-alive
    # connection after the first waited ~40 ms for the client's delayed ACK (p50 13 -> 56 ms).
    sock = listen(host, 0)
    address = sock.getsockname()[:2]

    async def accepted_no_delay() -> int:
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connection = writer.get_extra_info("socket")
            seen.set_result(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*address)
            value = await asyncio.wait_for(seen, timeout=30)
            writer.close()
        return value

    assert asyncio.run(accepted_no_delay()) == 1

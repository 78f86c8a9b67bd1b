"""Multipart uploads (`curl -F file=@photo.jpg`, requests' `files=`): the same answers as a raw
body, through the same body cap and header checks, and a 400 naming the field for odd forms."""

from __future__ import annotations

from pathlib import Path

import pytest
import upload_files as files
from fastapi.testclient import TestClient
from zoo_checkpoints import make_checkpoint

from cnnlab.deploy.served import load_served_models
from cnnlab.deploy.server import create_app

PNG = {"Content-Type": "image/png"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("forms") / "best.pt", "lenet5_modern", 28)


@pytest.fixture
def client(checkpoint: Path):
    app = create_app(load_served_models([str(checkpoint)], copies=1), max_body_bytes=1_000_000)
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize("field", ["file", "image"])  # `file`, or the form's only file part
@pytest.mark.parametrize("route", ["/api/predict?topk=3", "/api/explain?topk=3"])
def test_a_form_upload_gets_the_raw_bodys_answer(client: TestClient, route: str, field: str):
    image = files.rgb_jpeg()
    raw = client.post(route, content=image, headers={"Content-Type": "image/jpeg"})
    form = client.post(route, files={field: ("photo.jpg", image, "image/jpeg")})
    assert raw.status_code == form.status_code == 200, form.text
    assert form.json()["top"] == raw.json()["top"]


def test_the_file_field_is_chosen_among_several_parts(client: TestClient) -> None:
    parts = [
        ("thumbnail", ("small.txt", b"not an image", "text/plain")),
        ("file", ("photo.png", files.gray_png(), "image/png")),
        ("note", (None, b"a plain field")),
    ]
    assert client.post("/api/predict", files=parts).status_code == 200


@pytest.mark.parametrize(
    ("parts", "found"),
    [
        ([("note", (None, b"no file here"))], "no file part"),
        ([("file", (None, b"a field named file, but not a file"))], "no file part"),
        (
            [("a", ("a.png", files.gray_png(), "image/png")), ("b", ("b.png", files.gray_png()))],
            "2 file parts",
        ),
        (
            [("file", ("a.png", files.gray_png())), ("file", ("b.png", files.gray_png()))],
            "2 file parts",
        ),
    ],
)
def test_a_form_without_one_file_is_400_naming_the_field(
    client: TestClient, parts: list, found: str
) -> None:
    answer = client.post("/api/predict", files=parts)
    assert answer.status_code == 400
    assert answer.json()["detail"] == (
        f"the form has {found}; send one image in a field named 'file' (curl -F file=@photo.jpg)"
    )


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"\xff" * 1_200_000, 413, "request body over the 1 MB limit"),
        (b"hello, I am text\n" * 20, 415, "not an image"),
        (files.png_header_claiming(7_000, 7_000), 413, "the limit is 40 MP"),
        (b"", 400, "empty upload"),
    ],
)
def test_form_uploads_pass_the_same_caps_and_checks(
    client: TestClient, body: bytes, status: int, message: str
) -> None:
    answer = client.post("/api/predict", files={"file": ("photo.jpg", body, "image/jpeg")})
    assert answer.status_code == status and message in answer.json()["detail"]
    assert client.post("/api/predict", content=files.gray_png(), headers=PNG).status_code == 200


def test_the_api_schema_offers_both_bodies(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    content = schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert set(content) == {"image/*", "multipart/form-data"}

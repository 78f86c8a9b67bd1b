"""Every `cnnlab ...` command the README, docs/*.md and the `--help` examples show, run for real.

Commands come from the console/bash code blocks (a `$ ` line of a console block, every line of
a bash block, backslash continuations joined) and from the `e.g. VALUE` examples in the help of
every option. Each is run in a workspace of tiny generated data through typer's CliRunner, after
the placeholder table below swaps the docs' datasets, paths and sizes for tiny ones; a command
that cannot run here is listed in `NOT_RUN` with the reason. A new documented command is run as
soon as it appears: the test fails unless it works (or is listed).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.data.datasets import load_dataset
from cnnlab.engine.checkpoint import save_checkpoint
from cnnlab.engine.config import TrainConfig
from cnnlab.engine.trainer import train
from cnnlab.models import create_model

REPOSITORY = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:cnnlab|torchrun\s.*-m cnnlab)\s")
pytestmark = pytest.mark.slow  # 81 commands run for real: 5.3 min on 2 cores at load 8 (2026-12-06)

EXAMPLE = re.compile(r"\be\.g\. (\S+)")

# Placeholders of the docs -> the workspace's tiny equivalents (applied in order).
PLACEHOLDERS = [
    # Datasets: every photo or digit folder is the tiny 10-class tree; MNIST is the built-in 5k,
    # which training commands replace by the tree too (4,000 images are too many here).
    (r"folder:\S+", "folder:photos"),
    (r"fashion-mnist:\S+", "folder:photos"),
    (r"mnist:PATH", "folder:photos"),
    (r"mnist:\S+", "mnist-5k"),
    (r"^((?:cnnlab )?train .*)--data mnist-5k", r"\1--data folder:photos"),
    # Configs: copies on the tree, without time budgets; a study of 2 runs, not 30.
    (r"examples/(photos_cpu|lenet5_fashion_mnist)\.yaml", r"\1.yaml"),
    (r"examples/lenet5_fashion_mnist_study\.yaml", "tiny_study.yaml"),
    (r"(?<![\w/])examples/", f"{REPOSITORY}/examples/"),
    (r"/tmp/explain-demo/digits", "digits"),
    (r"/tmp/explain-demo", "explain-demo"),
    (r"digits/\*\.png", "digits/digit0.png"),  # no shell to expand it
    (r"test1/", "digits/"),  # Kaggle's Dogs-vs-Cats test folder
    # Sizes: one epoch, one seed, one worker process, small images and batches, one model of
    # a benchmark's or a comparison's list (tests/compare and tests/test_benchmark.py cover
    # every family's recipe and benchmark).
    (r"--epochs \d+", "--epochs 1"),
    (r"--time-budget \S+", "--epochs 1"),
    (r"--seeds \d+", "--seeds 1"),
    (r"--workers \d+", "--workers 1"),
    (r"--image-size \d+", "--image-size 32"),
    (r"--batch-sizes \S+", "--batch-sizes 2 --repeats 1"),
    (r"^((?:cnnlab )?(?:bench|compare) .*--models) ([\w.]+),\S+", r"\1 \2"),
    (r"--port \d+", "--port 0"),
    (r"runs/other/best\.pt", "runs/demo/best.pt"),
    (r"--resume runs/my-run", "--resume runs/my-run --epochs 2"),
]
# Appended to these subcommands unless the command sets the option itself or resumes a run.
TINY_SETTINGS = {
    "train": ["--epochs", "1", "--batch-size", "8", "--force"],
    "transfer": ["--epochs", "1", "--batch-size", "8", "--force"],
    "compare": ["--epochs", "1"],
}
RAY = (
    "joins a Ray cluster of other machines with shared storage; tests/studies/test_ray.py runs "
    "--ray auto on a two-node cluster of this machine"
)
NOT_RUN = {
    "torchrun --nproc-per-node 2 -m cnnlab train --data mnist ...": "an elided command line "
    "(`...`) under torchrun; tests/engine/test_ddp.py runs data-parallel training",
    "cnnlab transfer --from resnet18.IMAGENET1K_V1 --data folder:~/ants-bees --mode head "
    "--image-size 224": "needs torchvision's ImageNet weights in the torch hub cache (a "
    "download); tests/transfer covers torchvision sources",
    "cnnlab transfer --from SOURCE --data D --mode full|last:K|head [--head-hidden N]": "a "
    "synopsis",
    "cnnlab transfer --resume RUN [--epochs N]": "a synopsis",
    "cnnlab bench --models resnet18,vgg11_bn,alexnet --batch-sizes 16,64 --input 3x64x64 "
    "[--device cpu|cuda] [--amp] [--channels-last] [--compile] [--repeats 5] [--json]": "a synopsis",
    "cnnlab train --model resnet20 --data folder:hymenoptera_data --image-size 32 ...": "an "
    "elided command line (`...`: the options of the transfer command above it)",
    "cnnlab study run study.yaml --out studies/lenet --ray auto --storage /mnt/nfs/lenet": RAY,
    "cnnlab compare -m resnet20,vgg11_bn -d cifar10 --out compare/c10 --ray A:6379 "
    "--storage /mnt/nfs/c10": RAY,
}
# Help examples that are not option values of a runnable command line.
BUDGET = "a 10-minute run; the documented commands run budgets as one epoch"
HELP_EXAMPLES_NOT_RUN = {
    ("eval", "--data", "mnist"): "the full MNIST (a download); the docs' commands run mnist-5k",
    ("compare", "--data", "folder:PATH"): "a placeholder",
    ("train", "--test-data", "folder:PATH"): "a placeholder; tests/engine/test_run_splits.py "
    "trains with --test-data",
    ("transfer", "--test-data", "folder:PATH"): "a placeholder; tests/transfer trains with "
    "--test-data",
    ("train", "--time-budget", "10m"): BUDGET,
    ("transfer", "--time-budget", "10m"): BUDGET,
    ("compare", "--time-budget", "10m"): BUDGET,
}


def documented_commands() -> list[tuple[str, str]]:
    """(document, command) for every command line in the documents' shell code blocks."""
    found = []
    for document in DOCUMENTS:
        for block in FENCE.finditer(document.read_text()):
            language, body = block.groups()
            if language not in ("", "bash", "sh", "shell", "console"):
                continue
            for line in _joined_lines(body):
                if language == "console":
                    if not line.startswith("$ "):
                        continue  # output
                    line = line[2:]
                line = re.sub(r"\s+#.*$", "", line).strip()
                if COMMAND.match(line):
                    found.append((document.name, line))
    return found


def _joined_lines(body: str) -> list[str]:
    lines: list[str] = []
    for line in body.splitlines():
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1].rstrip() + " " + line.strip()
        else:
            lines.append(line.strip())
    return lines


def help_examples() -> list[tuple[str, str, str]]:
    """(command path, option, value) for every `e.g. VALUE` in an option's help."""
    found = []

    def walk(command, path: list[str]) -> None:  # typer's (possibly vendored) click commands
        if hasattr(command, "list_commands"):  # a group: the top level loads its commands lazily
            context = typer.Context(command)
            for name in command.list_commands(context):
                walk(command.get_command(context, name), [*path, name])
            return
        for parameter in command.params:
            if parameter.param_type_name == "option" and parameter.help:
                for value in EXAMPLE.findall(parameter.help):
                    value = value.rstrip(".,;")
                    if value.count(")") > value.count("("):  # closes the sentence's bracket
                        value = value[:-1]
                    found.append((" ".join(path), parameter.opts[0], value))

    walk(typer.main.get_command(app), [])
    return found


def runnable(command: str) -> tuple[dict[str, str], list[str]]:
    """The environment and the CLI arguments of a documented command, tiny settings applied."""
    for pattern, replacement in PLACEHOLDERS:
        command = re.sub(pattern, replacement, command)
    words = shlex.split(command)
    environment = {}
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        environment[name] = value
    arguments = words[1:]  # without `cnnlab`
    settings = TINY_SETTINGS.get(arguments[0], [])
    if "--resume" not in arguments:
        for index, word in enumerate(settings):
            if word.startswith("--") and word not in arguments:
                value = settings[index + 1 : index + 2]
                arguments += [word, *(v for v in value if not v.startswith("--"))]
    return environment, arguments


CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
DIGIT_CLASSES = load_dataset("mnist-5k").train.classes  # the demo's classes, so eval can compare


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny data and runs under the names the docs use, built once for all the commands."""
    root = tmp_path_factory.mktemp("docs")
    generator = np.random.default_rng(0)
    for index, name in enumerate(DIGIT_CLASSES):  # 3 colour photos per class, 36x36
        folder = root / "photos" / name
        folder.mkdir(parents=True)
        for number in range(3):
            pixels = generator.integers(0, 256, (36, 36, 3)) // 2 + index * 12
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name[0]}_{number}.png")
    (root / "digits").mkdir()
    test = load_dataset("mnist-5k").test
    for index in range(1):  # explanations with sanity checks cost seconds per image
        image = Image.fromarray(test.images[index, 0].numpy())
        image.save(root / "digits" / f"digit{index}.png")
    image.save(root / "digit.png")
    for folder in ("runs/demo", "runs/my-run"):  # LeNet-5 on the photos, seen in grayscale
        config = TrainConfig(data=f"folder:{root / 'photos'}", epochs=1, out=str(root / folder))
        train(config, progress=False)
    (root / "runs" / "mnist").symlink_to("demo")
    _untrained(root / "runs" / "cifar10" / "best.pt", "resnet20", CIFAR10_CLASSES, [3, 32, 32])
    _untrained(
        root / "runs" / "dogs-vs-cats" / "best.pt", "lenet5_modern", ["cat", "dog"], [1, 28, 28]
    )
    Image.fromarray(generator.integers(0, 256, (32, 32, 3)).astype(np.uint8)).save(root / "cat.png")
    for name in ("photos_cpu.yaml", "lenet5_fashion_mnist.yaml"):
        config = yaml.safe_load((REPOSITORY / "examples" / name).read_text())
        config.pop("time_budget", None)
        (root / name).write_text(yaml.safe_dump(config | {"data": "folder:photos"}))
    study = yaml.safe_load((REPOSITORY / "examples/lenet5_fashion_mnist_study.yaml").read_text())
    study["base"] |= {"data": "folder:photos", "epochs": 1, "batch_size": 16}
    study["seeds"] = 1
    study["factors"] = {"activation": ["sigmoid", "relu"]}
    (root / "tiny_study.yaml").write_text(yaml.safe_dump(study))
    return root


def _untrained(path: Path, name: str, classes: list[str], shape: list[int]) -> None:
    """A checkpoint of an untrained network (explanations and predictions need no training)."""
    model = create_model(name, num_classes=len(classes))
    state = {
        "model_name": model.model_name,
        "model_options": model.model_options,
        "model_state": model.state_dict(),
        "classes": classes,
        "mean": [0.5] * shape[0],
        "std": [0.25] * shape[0],
        "image_shape": shape,
    }
    save_checkpoint(path, state)


def _serve_once(app_, sock, workers: int) -> None:
    """Stands in for uvicorn: the served app answers, then the command returns."""
    sock.close()
    with TestClient(app_) as client:
        assert client.get("/healthz").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("document", "command"),
    documented_commands(),
    ids=[f"{name}: {line[:60]}" for name, line in documented_commands()],
)
def test_documented_command_runs(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, document: str, command: str
) -> None:
    """Run in document order: later commands use what earlier ones wrote (a study, an export)."""
    if command in NOT_RUN:
        pytest.skip(NOT_RUN[command])
    monkeypatch.chdir(workspace)
    monkeypatch.setattr("cnnlab.deploy.server.run_server", _serve_once)
    environment, arguments = runnable(command)
    result = CliRunner().invoke(app, arguments, env=environment)
    assert result.exit_code == 0, f"{command}\n-> cnnlab {shlex.join(arguments)}\n{result.output}"


def test_not_run_lists_only_documented_commands() -> None:
    documented = {command for _, command in documented_commands()}
    assert set(NOT_RUN) <= documented, set(NOT_RUN) - documented


HELP_BASES = {  # a runnable command line for each command whose options show examples
    "train": "train --model resnet20 --data folder:photos --epochs 1 --out {out}",
    "transfer": "transfer --from resnet20.cifar10 --data folder:photos --image-size 32 --epochs 1 "
    "--out {out}",
    "summary": "summary resnet20",
    "bench": "bench --models lenet5_modern --batch-sizes 2 --repeats 1",
    "eval": "eval runs/demo",
    "predict": "predict runs/demo digits --csv {out}.csv",
    ("train", "--model-opt"): "train --data folder:photos --epochs 1 --out {out}",  # LeNet-5
    ("predict", "--columns"): "predict runs/dogs-vs-cats digits --csv {out}.csv",
    ("transfer", "--model-opt"): "transfer --from runs/demo --data folder:photos --epochs 1 "
    "--out {out}",
    "compare": "compare --models resnet20 --data folder:photos --epochs 1 --out {out}",
}


HELP_EXAMPLES = help_examples()


def test_the_help_examples_are_found() -> None:
    """An empty list would run no example (the parametrized test below would only skip)."""
    assert {command for command, _, _ in HELP_EXAMPLES} >= {"train", "transfer", "predict"}


@pytest.mark.parametrize(
    ("command", "option", "value"),
    HELP_EXAMPLES,
    ids=[" ".join(example) for example in HELP_EXAMPLES],
)
def test_help_example_runs(
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    option: str,
    value: str,
) -> None:
    if (command, option, value) in HELP_EXAMPLES_NOT_RUN:
        pytest.skip(HELP_EXAMPLES_NOT_RUN[command, option, value])
    assert command in HELP_BASES, f"`cnnlab {command} --help` shows examples: add it to HELP_BASES"
    monkeypatch.chdir(workspace)
    base = HELP_BASES.get((command, option), HELP_BASES[command]).format(out=tmp_path / "out")
    arguments = [*base.split(), option, value]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, f"cnnlab {shlex.join(arguments)}\n{result.output}"

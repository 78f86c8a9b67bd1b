"""Every network in the zoo: stages cover the backbone, and the classifier swap (auxiliary heads
included, with or without a hidden layer) gives the new class count. Meta device: no compute."""

from __future__ import annotations

import pytest
import torch

from cnnlab.models import create_model, list_models, model_info
from cnnlab.models.layers import AuxOutputs
from cnnlab.transfer import TransferSpec, trainable_modules
from cnnlab.transfer.hook import new_heads

ZOO = [name for name in list_models() if model_info(name).builder.__module__.startswith("cnnlab.")]


def _meta_model(name: str):
    with torch.device("meta"):
        return create_model(name)


@pytest.mark.parametrize("name", ZOO)
def test_stages_cover_every_parameter_outside_the_auxiliary_heads(name: str) -> None:
    model = _meta_model(name)
    stages = model.named_stages()
    in_stages = [id(p) for _, module in stages for p in module.parameters()]
    aux = {id(p) for head in getattr(model, "aux_heads", list)() for p in head.parameters()}
    assert len(in_stages) == len(set(in_stages)), "a parameter belongs to two stages"
    outside = [n for n, p in model.named_parameters() if id(p) not in set(in_stages) | aux]
    assert outside == []
    assert stages[-1][1] is model.get_classifier()


@pytest.mark.parametrize("hidden", [16])
@pytest.mark.parametrize("name", ZOO)
def test_reset_classifier_swaps_every_head(name: str, hidden: int) -> None:
    model = _meta_model(name)
    with torch.device("meta"):
        model.reset_classifier(7, hidden=hidden)
        outputs = model.train()(torch.empty(2, *model_info(name).input_size))
    logits = outputs.logits if isinstance(outputs, AuxOutputs) else outputs
    assert logits.shape == (2, 7)
    for aux in outputs.aux_logits if isinstance(outputs, AuxOutputs) else ():
        assert aux.shape == (2, 7)
    expected_heads = 1 + len(getattr(model, "aux_heads", list)())
    assert len(new_heads(model)) == expected_heads


def test_head_mode_trains_the_auxiliary_classifiers_too() -> None:
    model = _meta_model("googlenet")
    trained = {
        id(p) for m in trainable_modules(model, TransferSpec("x", "head")) for p in m.parameters()
    }
    for head in (model.get_classifier(), model.aux1.fc2, model.aux2.fc2):
        assert {id(p) for p in head.parameters()} <= trained
    assert id(model.conv1.conv.weight) not in trained and id(model.aux1.fc1.weight) not in trained

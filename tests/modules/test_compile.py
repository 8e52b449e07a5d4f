"""``compile`` reaches every compiled region of the training step: the student's forward
(with EXP-3's block taps) and the teacher's forward, with no graph break (cheap ``eager`` backend)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from helpers import DIGITS, OPTIM, TINY_VIT, cka_module, kl_module, tiny_teacher
from torch._dynamo.utils import counters

from kdbias.modules import TeacherModule


def _baseline():
    return TeacherModule("deit_tiny_p4", arch_kwargs=TINY_VIT, optim=OPTIM, compile="eager", **DIGITS)


@pytest.mark.parametrize(
    ("factory", "regions"),
    [
        (_baseline, 1),  # the student's forward
        (lambda: kl_module(tiny_teacher(), compile="eager"), 2),  # + the teacher's forward
        (lambda: cka_module(compile="eager"), 2),  # the student's forward with its block taps + the teacher's blocks
    ],
    ids=["baseline", "exp1", "exp3"],
)
def test_every_region_of_the_step_is_compiled_without_graph_breaks(factory, regions):
    torch._dynamo.reset()
    counters.clear()
    module = factory()
    module.train()
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    losses, _ = module.training_losses(images, labels)
    losses["loss"].backward()
    assert counters["stats"]["unique_graphs"] >= regions
    assert not counters["graph_break"], dict(counters["graph_break"])
    before = counters["stats"]["unique_graphs"]
    module.training_losses(images, labels)[0]["loss"].backward()  # a second step reuses the graphs
    assert counters["stats"]["unique_graphs"] == before


def test_compiled_and_eager_losses_agree():
    eager, compiled = _baseline(), _baseline()
    compiled.load_state_dict(eager.state_dict())
    eager.eval(), compiled.eval()
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(
        compiled.training_losses(images, labels)[0]["loss"], eager.training_losses(images, labels)[0]["loss"]
    )

"""``compile`` reaches every compiled region of the training step: the student's forward
(with EXP-3's block taps) and the teacher's forward, with no graph break (cheap ``eager`` backend);
a compiled step computes what eager execution computes."""

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


@pytest.mark.parametrize("kind", ["baseline", "exp3"])
def test_compiled_step_matches_eager_execution(kind):
    """The compiled step (``aot_eager``: a captured, functionalised graph run by AOTAutograd)
    against plain eager execution (``compile=False``): same loss, same gradients."""
    torch._dynamo.reset()
    counters.clear()

    def build(compile):
        torch.manual_seed(0)
        if kind == "baseline":
            return TeacherModule("deit_tiny_p4", arch_kwargs=TINY_VIT, optim=OPTIM, compile=compile, **DIGITS)
        return cka_module(compile=compile)

    eager, compiled = build(False), build("aot_eager")
    compiled.load_state_dict(eager.state_dict())
    for module in (eager, compiled):
        module.train()
        for layer in module.modules():  # drop-path draws: same weights, no randomness to compare
            if hasattr(layer, "drop_prob"):
                layer.drop_prob = 0.0
    # 8 images: the debiased CKA (the default) divides by n - 3, ill-conditioned at n = 4
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    losses = [m.training_losses(images, labels)[0]["loss"] for m in (eager, compiled)]
    torch.testing.assert_close(losses[1], losses[0])
    assert counters["stats"]["unique_graphs"] >= 1  # the compiled side ran a captured graph
    for loss in losses:
        loss.backward()
    grads = [{n: p.grad for n, p in m.student.named_parameters() if p.grad is not None} for m in (eager, compiled)]
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-5, msg=name)

"""Training FLOPs per image of the rows beyond the plan (registry group ``why``), counted on the CPU.

    python -m experiments.benchmark.why_cost

One training step (``training_losses`` forward and ``loss.backward()``) of each row's module at
the paper preset's sizes (random weights: FLOPs do not depend on them), counted with
``FlopCounterMode`` (:func:`experiments.benchmark.measure.count_flops`) on a batch of 2 CIFAR-sized
images, divided by 2; times 45,000 training images and the preset's epochs for a run's total.
"""

from __future__ import annotations

import torch

from kdbias.modules import CKADistillModule, KLDistillModule, Optimization, ProbeTeacherModule, TeacherModule
from kdbias.teacher import FrozenTeacher

from .experiment import preset_config
from .measure import count_flops

TRAIN_IMAGES = 45_000
BATCH = 2


def _student_kwargs() -> dict:
    return {"arch_kwargs": {"drop_path_rate": 0.1}, "optim": Optimization(), "num_classes": 10, "dataset": "cifar10"}


def modules() -> dict[str, torch.nn.Module]:
    """Each row's module at paper sizes (teachers built once and shared)."""
    torch.manual_seed(0)
    resnet = FrozenTeacher.from_module(TeacherModule("resnet18_cifar"))
    probe = ProbeTeacherModule(pretrained=None, arch_kwargs={"img_size": 224})
    deit = TeacherModule("deit_small_p4", arch_kwargs={"drop_path_rate": 0.1})
    # from_module freezes the network in place: the teachers' own rows train separate copies
    frozen_probe = FrozenTeacher.from_module(ProbeTeacherModule(pretrained=None, arch_kwargs={"img_size": 224}))
    frozen_deit = FrozenTeacher.from_module(TeacherModule("deit_small_p4"))
    kl = {"temperature": 4.0, "alpha": 0.5, **_student_kwargs()}
    return {
        "exp1_cka": CKADistillModule("deit_tiny_p4", resnet, layer_pairs="relative", **_student_kwargs()),
        "teacher_dinov2_probe": probe,
        "exp3_kl": KLDistillModule("deit_tiny_p4", frozen_probe, **kl),
        "teacher_deit": deit,
        "exp_vit_kl": KLDistillModule("deit_tiny_p4", frozen_deit, **kl),
        "exp1_matched": KLDistillModule("deit_tiny_p4", resnet, **kl),
        "exp_random_teacher": KLDistillModule("deit_tiny_p4", resnet, **kl),
    }


def gflop_per_image(module: torch.nn.Module) -> float:
    images = torch.randn(BATCH, 3, 32, 32)
    targets = torch.randint(0, 10, (BATCH,))
    module.train()

    def step() -> None:
        losses, _ = module.training_losses(images, targets)
        losses["loss"].backward()

    return count_flops(step) / BATCH / 1e9


def main() -> None:
    print("| run | training GFLOP / image | epochs | PFLOP per run (45,000 images) |")
    print("|---|---|---|---|")
    for name, module in modules().items():
        gflop = gflop_per_image(module)
        epochs = preset_config(name)["trainer"]["max_epochs"]
        print(f"| {name} | {gflop:.2f} | {epochs} | {gflop * TRAIN_IMAGES * epochs / 1e6:.1f} |", flush=True)


if __name__ == "__main__":
    main()

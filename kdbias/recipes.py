"""The research plan's runs, one :class:`~kdbias.experiment.Experiment` each.

``experiments/<name>.py`` runs ``RECIPES[name]``; :mod:`experiments.run_all` runs them
in dependency order. Paper presets follow the plan; ``--smoke`` presets run offline on
a CPU in well under three minutes each.
"""

from __future__ import annotations

import argparse

import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from kdbias.callbacks import (
    AttentionDistanceCallback,
    CKAHeatmapCallback,
    GeneralisationGapCallback,
    HessianCallback,
    TeacherKNNCallback,
)
from kdbias.data import CIFARDataModule
from kdbias.experiment import Experiment
from kdbias.modules.cka_distill import CKADistillModule
from kdbias.modules.kl_distill import KLDistillModule
from kdbias.modules.teacher import TeacherModule


def _optimisation(config: argparse.Namespace) -> dict:
    return dict(
        optimizer=config.optimizer, lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum,
        warmup_epochs=config.warmup_epochs, min_lr_ratio=config.min_lr_ratio,
        label_smoothing=config.label_smoothing, compile=config.compile,
    )


def _model_arguments(default_model: str, pretrained: str | None = None, drop_path: float = 0.1):
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", default=default_model, help="architecture (kdbias.models.MODEL_NAMES)")
        parser.add_argument("--pretrained", default=pretrained,
                            help="none | hub | path to a .pth/.safetensors state dict")
        parser.add_argument("--drop-path", type=float, default=drop_path, help="stochastic depth rate")

    return add


# Analytics at paper scale cost <= 2.7 % of a student run's training FLOPs (README, Performance):
# Hessian at epochs 100 and 200 on 512 images, <= 2 x 50 Hessian-vector products each.
_ANALYTICS_PAPER = dict(
    attn_every=10, attn_images=512, hessian_every=100, hessian_images=512, hessian_max_iter=50,
    cka_every=50, cka_batches=8, cka_batch_size=256, gen_gap_every=5, gen_gap_images=2048,
    knn_train=5000, knn_val=1000, analytics=True,
)
_ANALYTICS_SMOKE = dict(
    attn_every=1, attn_images=64, hessian_every=100, hessian_images=32, hessian_max_iter=4,
    cka_every=1, cka_batches=2, cka_batch_size=16, gen_gap_every=1, gen_gap_images=256,
    knn_train=128, knn_val=64,
)


def _analytics_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("analytics (measured at validation end on fixed images)")
    group.add_argument("--analytics", action=argparse.BooleanOptionalAction, help="run the analytics callbacks")
    for flag, kind, text in (
        ("--attn-every", int, "mean attention distance every N epochs"),
        ("--attn-images", int, "validation images for attention distance"),
        ("--hessian-every", int, "Hessian trace / top eigenvalue every N epochs (and always at the end)"),
        ("--hessian-images", int, "unaugmented train images of the Hessian loss"),
        ("--hessian-max-iter", int, "max Hutchinson probes / power iterations"),
        ("--cka-every", int, "CKA heatmap every N epochs"),
        ("--cka-batches", int, "minibatches accumulated per CKA heatmap"),
        ("--cka-batch-size", int, "images per CKA minibatch"),
        ("--gen-gap-every", int, "generalisation gap every N epochs"),
        ("--gen-gap-images", int, "unaugmented train images of the generalisation gap"),
        ("--knn-train", int, "train images of the teacher k-NN probe (headless teachers)"),
        ("--knn-val", int, "validation images of the teacher k-NN probe"),
    ):
        group.add_argument(flag, type=kind, help=text)


def _student_callbacks(config: argparse.Namespace, datamodule: CIFARDataModule, teacher: str | None) -> list[Callback]:
    """Phase-3 analytics of a ViT student; CKA heatmaps and a k-NN probe need a teacher."""
    if not config.analytics:
        return []
    callbacks: list[Callback] = [
        AttentionDistanceCallback(every_n_epochs=config.attn_every, num_images=config.attn_images),
        HessianCallback(every_n_epochs=config.hessian_every, num_images=config.hessian_images,
                        max_iter=config.hessian_max_iter),
        GeneralisationGapCallback(every_n_epochs=config.gen_gap_every, num_images=config.gen_gap_images),
    ]
    if teacher is not None:
        callbacks.append(CKAHeatmapCallback(every_n_epochs=config.cka_every, num_batches=config.cka_batches,
                                            batch_size=config.cka_batch_size))
    if teacher == "headless":
        callbacks.append(TeacherKNNCallback(num_train=config.knn_train, num_val=config.knn_val))
    return callbacks


def _teacher_callbacks(config: argparse.Namespace, datamodule: CIFARDataModule) -> list[Callback]:
    if not config.analytics:
        return []
    return [GeneralisationGapCallback(every_n_epochs=config.gen_gap_every, num_images=config.gen_gap_images)]


def _with_analytics(add_arguments):
    def add(parser: argparse.ArgumentParser) -> None:
        add_arguments(parser)
        _analytics_arguments(parser)

    return add


_STUDENT_PAPER = dict(epochs=200, batch_size=1024, optimizer="adamw", lr=5e-4, weight_decay=0.05,
                      warmup_epochs=5.0, **_ANALYTICS_PAPER)
_STUDENT_SMOKE = dict(epochs=3, lr=1e-3, **_ANALYTICS_SMOKE)


def _supervised(config: argparse.Namespace, datamodule: CIFARDataModule) -> TeacherModule:
    pretrained = None if str(config.pretrained).lower() in ("none", "") else config.pretrained
    return TeacherModule(
        model=config.model, num_classes=datamodule.num_classes, dataset=config.dataset,
        pretrained=pretrained, model_kwargs={"drop_path_rate": config.drop_path}, **_optimisation(config),
    )


TEACHER_RESNET18 = Experiment(
    name="teacher_resnet18",
    description="Phase 1: ResNet-18 teacher (3x3 stride-1 stem, no max-pool), SGD + cosine, CutMix; target > 94 %.",
    build_module=_supervised,
    add_arguments=_with_analytics(_model_arguments("resnet18_cifar", drop_path=0.0)),
    build_callbacks=_teacher_callbacks,
    paper=dict(epochs=200, batch_size=128, optimizer="sgd", lr=0.1, weight_decay=5e-4, warmup_epochs=1.0,
               min_lr_ratio=0.0, mix="cutmix", mix_prob=0.5, **_ANALYTICS_PAPER),
    smoke=dict(epochs=3, lr=0.05, **_ANALYTICS_SMOKE),
)

TEACHER_CONVNEXTV2 = Experiment(
    name="teacher_convnextv2",
    description="Phase 1: ConvNeXt V2-Tiny teacher, ImageNet weights, fresh 2x2 stride-2 stem; AdamW + cosine fine-tuning; target > 95 %.",
    build_module=_supervised,
    add_arguments=_with_analytics(_model_arguments("convnextv2_tiny_cifar", pretrained="hub", drop_path=0.1)),
    build_callbacks=_teacher_callbacks,
    paper=dict(epochs=100, batch_size=128, optimizer="adamw", lr=2e-4, weight_decay=0.05, warmup_epochs=5.0,
               mix="cutmix", mix_prob=0.5, **_ANALYTICS_PAPER),
    smoke=dict(epochs=2, batch_size=32, limit_train_batches=4, pretrained=None, **_ANALYTICS_SMOKE),
)

BASELINE = Experiment(
    name="baseline",
    description="Baseline: DeiT student (patch 4 on 32 px) trained with vanilla cross-entropy.",
    build_module=_supervised,
    add_arguments=_with_analytics(_model_arguments("deit_tiny_p4", drop_path=0.1)),
    build_callbacks=lambda config, dm: _student_callbacks(config, dm, teacher=None),
    paper=_STUDENT_PAPER,
    smoke=_STUDENT_SMOKE,
)



def find_teacher_checkpoint(runs_dir: str | Path, teacher_experiment: str, dataset: str, smoke: bool = False) -> Path:
    """``best.ckpt`` of the latest completed ``teacher_experiment`` run on ``dataset``.

    A run counts when its ``summary.json`` names the same dataset. Raises a
    ``FileNotFoundError`` naming the command that trains such a teacher.
    """
    root = Path(runs_dir) / teacher_experiment
    candidates = sorted(root.glob("version_*/summary.json"), key=lambda p: int(p.parent.name.split("_")[-1]))
    for summary_path in reversed(candidates):
        summary = json.loads(summary_path.read_text())
        best = summary_path.parent / "checkpoints" / "best.ckpt"
        if summary.get("dataset") == dataset and best.is_file():
            return best
    command = f"python experiments/{teacher_experiment}.py" + (" --smoke" if smoke else f" --dataset {dataset}")
    raise FileNotFoundError(
        f"No completed {teacher_experiment} run on {dataset!r} under {root}. Train the teacher first with "
        f"`{command}`, or pass --teacher-ckpt PATH/TO/best.ckpt."
    )


def _kd_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments("deit_tiny_p4", drop_path=0.1)(parser)
    parser.add_argument("--teacher-ckpt", default=None,
                        help="TeacherModule checkpoint (default: best.ckpt of the latest matching teacher run)")
    parser.add_argument("--temperature", type=float, default=4.0, help="softmax temperature tau of the KD term")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the KD term; 1 - alpha weighs the CE")
    parser.add_argument("--distill-token", default=None, choices=["soft", "hard"],
                        help="add DeiT's distillation token trained on the teacher's soft or hard labels")


def _kd(teacher_experiment: str):
    def build(config: argparse.Namespace, datamodule: CIFARDataModule) -> KLDistillModule:
        teacher = config.teacher_ckpt or find_teacher_checkpoint(
            config.runs_dir, teacher_experiment, config.dataset, smoke=config.smoke
        )
        config.teacher_ckpt = str(teacher)
        return KLDistillModule(
            student=config.model, teacher=teacher, temperature=config.temperature, alpha=config.alpha,
            distill_token=config.distill_token, num_classes=datamodule.num_classes, dataset=config.dataset,
            model_kwargs={"drop_path_rate": config.drop_path}, **_optimisation(config),
        )

    return build


def _layer_pairs(text: str) -> list[tuple[int, int]]:
    """``"3:3,6:6"`` -> ``[(3, 3), (6, 6)]``."""
    try:
        return [tuple(int(i) for i in pair.split(":")) for pair in text.split(",")]  # type: ignore[misc]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--layer-pairs wants 's:t,s:t,...' (e.g. 3:3,6:6), got {text!r}") from error


def _cka_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments("deit_tiny_p4", drop_path=0.1)(parser)
    parser.add_argument("--teacher", default="dinov2_vits14", help="frozen teacher architecture")
    parser.add_argument("--teacher-pretrained", default="hub",
                        help="hub | path to a .pth/.safetensors state dict | none (random: smoke only)")
    parser.add_argument("--teacher-image-size", type=int, default=224, help="teacher input side (224, or 112 = fast)")
    parser.add_argument("--layer-pairs", type=_layer_pairs, default=[(3, 3), (6, 6), (9, 9), (11, 11)],
                        help="student:teacher block pairs, 0-based")
    parser.add_argument("--lambda-cka", type=float, default=0.5, help="weight of L_cka")
    parser.add_argument("--lambda-tok", type=float, default=0.5, help="weight of L_tok")
    parser.add_argument("--cka-representation", default="image", choices=["image", "token"],
                        help="CKA samples: images (tokens flattened) or grid tokens")


def _cka(config: argparse.Namespace, datamodule: CIFARDataModule) -> CKADistillModule:
    pretrained = None if str(config.teacher_pretrained).lower() in ("none", "") else config.teacher_pretrained
    return CKADistillModule(
        student=config.model, teacher=config.teacher, teacher_pretrained=pretrained,
        teacher_image_size=config.teacher_image_size, layer_pairs=config.layer_pairs,
        lambda_cka=config.lambda_cka, lambda_tok=config.lambda_tok,
        cka_representation=config.cka_representation, num_classes=datamodule.num_classes,
        dataset=config.dataset, model_kwargs={"drop_path_rate": config.drop_path}, **_optimisation(config),
    )



def _soft_kl_experiment(name: str, teacher_experiment: str, teacher_label: str) -> Experiment:
    """EXP-1 / EXP-2: the same student recipe, distilled from a different CNN teacher."""
    return Experiment(
        name=name,
        description=f"{name.upper()[:3]}-{name[3:]}: DeiT student distilled from the {teacher_label} teacher "
        "with soft KL (tau=4, alpha=0.5).",
        build_module=_kd(teacher_experiment),
        add_arguments=_with_analytics(_kd_arguments),
        build_callbacks=lambda config, dm: _student_callbacks(config, dm, teacher="classifier"),
        paper=_STUDENT_PAPER,
        smoke=_STUDENT_SMOKE,
    )


EXP1 = _soft_kl_experiment("exp1", "teacher_resnet18", "ResNet-18")
EXP2 = _soft_kl_experiment("exp2", "teacher_convnextv2", "ConvNeXt V2")

EXP3 = Experiment(
    name="exp3",
    description="EXP-3: DeiT student with structural (CKA + token) distillation from a frozen DINOv2-S/14.",
    build_module=_cka,
    add_arguments=_with_analytics(_cka_arguments),
    build_callbacks=lambda config, dm: _student_callbacks(config, dm, teacher="headless"),
    paper={**_STUDENT_PAPER, "batch_size": 512},
    smoke={**_STUDENT_SMOKE, "batch_size": 32, "limit_train_batches": 6, "teacher_pretrained": None,
           "teacher_image_size": 112},
)

RECIPES: dict[str, Experiment] = {
    recipe.name: recipe for recipe in (TEACHER_RESNET18, TEACHER_CONVNEXTV2, BASELINE, EXP1, EXP2, EXP3)
}

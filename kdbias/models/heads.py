"""Whether pretrained weights carry a classification head, and for how many classes.

A teacher keeps its head only when its weights have one over the dataset's classes
(:class:`~kdbias.teacher.PretrainedTeacher`); this module answers from the file's tensor
names and shapes (a ``.safetensors`` header alone, no tensor read; other files with
``weights_only=True``) and the architecture's classifier name, on a meta-device network.
"""

from __future__ import annotations

from pathlib import Path

from kdbias.models.build import (
    Pretrained,
    PretrainedWeightsError,
    classifier_names,
    meta_model,
    read_weights,
    state_head_classes,
)

__all__ = ["check_head", "classifier_names", "head_classes", "state_head_classes"]


def head_classes(name: str, pretrained: Pretrained) -> int:
    """Classes of the head that ``pretrained`` weights hold for architecture ``name``: ``None``
    (random weights) 0; ``"hub"`` the pretrained configuration's ``num_classes``; a file: the
    rows of its classifier weight (0 without one). ``FileNotFoundError`` for a missing file,
    :class:`~kdbias.models.PretrainedWeightsError` for an unreadable one."""
    if pretrained is None:
        return 0
    if pretrained == "hub":
        cfg = getattr(meta_model(name, num_classes=1), "pretrained_cfg", None) or {}
        return int(cfg.get("num_classes") or 0)
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as file:
                shapes = {key: file.get_slice(key).get_shape() for key in file.keys()}
        except Exception as error:  # a damaged header: the reader's own message
            raise PretrainedWeightsError(f"cannot read weights file {path}: {error}") from None
        return state_head_classes(name, shapes)
    return state_head_classes(name, {k: tuple(v.shape) for k, v in read_weights(path).items()})


def check_head(name: str, pretrained: Pretrained, num_classes: int) -> None:
    """``ValueError`` (one line naming the fix) unless ``pretrained`` weights of ``name`` hold a
    head over exactly ``num_classes`` classes: what a student distilling logits needs."""
    found = head_classes(name, pretrained)
    if num_classes > 0 and found == num_classes:
        return
    if pretrained is None:
        what = "random weights have no trained head (headless)"
    else:
        head = f"a {found}-class head" if found else "no classification head (headless)"
        what = f"its weights ({pretrained}) have {head}"
    raise ValueError(
        f"teacher {name}: {what}, and soft-KL distillation needs teacher logits over the dataset's {num_classes} "
        f"classes. Train a head first (python experiments/teacher.py --name my_{name} --model.arch {name} "
        f"--model.pretrained WEIGHTS), then distil from it with --model.teacher run:my_{name}; or pass weights "
        f"whose head has {num_classes} classes."
    )

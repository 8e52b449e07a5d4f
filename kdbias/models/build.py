"""Model construction: one builder per architecture, all plain timm modules.

``build_model(name, num_classes, pretrained)`` returns:

- ``resnet18_cifar``: ResNet-18 with a 3x3 stride-1 stem and no max-pool;
  [B, 3, 32, 32] -> logits [B, num_classes].
- ``convnextv2_tiny_cifar``: ConvNeXt V2-Tiny whose 4x4 stride-4 stem is replaced,
  after any pretrained weights are loaded, by a fresh 2x2 stride-2 conv;
  [B, 3, 32, 32] -> logits [B, num_classes].
- ``deit_tiny_p4`` / ``deit_small_p4``: DeiT at 32 px with 4 px patches (8x8 grid + CLS
  = 65 tokens); [B, 3, 32, 32] -> logits [B, num_classes].
- ``dinov2_vits14``: DINOv2 ViT-S/14 without a head; [B, 3, S, S] -> CLS embedding
  [B, 384], S = ``img_size`` (224 by default, a 16x16 grid; 112 gives 8x8).
- ``dinov2_vits14_probe``: the same with a linear head on the CLS embedding (logits
  [B, num_classes]); trained as a linear probe by :class:`kdbias.modules.ProbeTeacherModule`.

``pretrained`` is ``None`` (random init), ``"hub"`` (timm's download) or the path of a
local weights file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``), loaded through timm so
that position and patch embeddings are resized to the model's grid.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models import generate_default_cfgs, load_state_dict, register_model
from timm.models.convnext import checkpoint_filter_fn as _convnext_filter
from timm.models.vision_transformer import checkpoint_filter_fn as _vit_filter
from timm.utils import unwrap_model
from torch import nn

Pretrained = str | Path | None
StateFilter = Callable[[dict, nn.Module], dict]


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be obtained or do not fit the architecture."""


def _hub_error(error: Exception) -> bool:
    # huggingface_hub's errors (offline, not cached, HTTP) all derive from OSError;
    # raw transport errors are recognised by the package they come from.
    package = type(error).__module__.split(".")[0]
    return isinstance(error, OSError) or package in {"huggingface_hub", "httpx", "httpx2", "requests", "urllib3"}


def _from_hub(model_id: str, **kwargs) -> nn.Module:
    try:
        return timm.create_model(model_id, pretrained=True, **kwargs)
    except Exception as error:
        if not _hub_error(error):
            raise
        raise PretrainedWeightsError(
            f"could not reach the Hugging Face hub for the pretrained weights of timm model '{model_id}' "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Download the weights "
            f'elsewhere and pass a local weights file instead (pretrained="/path/to/model.safetensors"), or '
            "pretrained=None for random weights (offline smoke runs only, not a result). Set HF_HUB_OFFLINE=1 to "
            "fail at once instead of retrying."
        ) from error


def read_weights(path: Path) -> dict:
    """The state dict in ``path``, read with ``weights_only=True``; ``PretrainedWeightsError``
    naming the file when it cannot be read or holds anything but tensors (no code runs)."""
    try:
        return load_state_dict(str(path), weights_only=True)
    except Exception as error:  # zip, pickle, safetensors and weights_only refusals alike
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        blocked = "Unsupported global" in str(error) or "GLOBAL" in str(error)
        reason = "it holds Python objects, not only tensors (refused: no code is run)" if blocked else first
        raise PretrainedWeightsError(
            f"cannot read weights file {path}: {reason}. Pass a .safetensors or .pth state dict of plain tensors."
        ) from None


def _mismatches(model: nn.Module, path: Path, state_filter: StateFilter | None) -> list[str]:
    """Keys of ``path`` (after timm's filter) that do not fit ``model``, classifier excluded."""
    state = read_weights(path)
    if state_filter is not None:
        try:
            state = state_filter(state, model)
        except Exception:  # a foreign file may break the filter; compare raw keys then
            pass
    classifier = model.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(tuple(c + "." for c in classifier))}
    state = {k: v for k, v in state.items() if not k.startswith(tuple(c + "." for c in classifier))}
    missing = [f"missing {k}" for k in own if k not in state]
    unexpected = [f"unexpected {k}" for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    return missing + unexpected + shapes


def _wrong_file(
    model_id: str, path: Path, problems: list[str], cause: Exception | None = None
) -> PretrainedWeightsError:
    detail = "; ".join(problems[:5]) or f"{type(cause).__name__}: {cause}"
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return PretrainedWeightsError(
        f"weights file {path} does not fit timm architecture '{model_id}': {detail}{more}. "
        f"Pass a weights file saved from '{model_id.split('.')[0]}'."
    )


def _from_file(model_id: str, path: Path, state_filter: StateFilter | None, **kwargs) -> nn.Module:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    state = read_weights(path)  # refuse an unreadable or unsafe file before timm sees it
    overlay: dict = dict(file=str(path))
    head = state_head_classes(model_id, {k: v.shape for k, v in state.items()})
    if head and head == kwargs.get("num_classes"):
        overlay["num_classes"] = head  # the file's head fits: timm keeps it (else it drops the head)
    try:
        model = timm.create_model(model_id, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as error:  # shape mismatch in load_state_dict, unreadable file, filter failure
        reference = timm.create_model(model_id, **kwargs)
        raise _wrong_file(model_id, path, _mismatches(reference, path, state_filter), error) from error
    # timm loads non-strictly when the head is reset, so foreign keys pass silently.
    problems = _mismatches(model, path, state_filter)
    if problems:
        raise _wrong_file(model_id, path, problems)
    return model


def _create(model_id: str, pretrained: Pretrained, state_filter: StateFilter | None = None, **kwargs) -> nn.Module:
    """timm model ``model_id`` ("arch.tag"): random, from the hub, or from a local file."""
    if pretrained is None:
        return timm.create_model(model_id, **kwargs)
    if pretrained == "hub":
        return _from_hub(model_id, **kwargs)
    return _from_file(model_id, Path(pretrained), state_filter, **kwargs)


def _resnet18_cifar(num_classes: int, pretrained: Pretrained, **kw) -> nn.Module:
    model = _create("resnet18.a1_in1k", pretrained, num_classes=num_classes, **kw)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def _convnextv2_tiny_cifar(num_classes: int, pretrained: Pretrained, drop_path_rate: float = 0.1, **kw) -> nn.Module:
    model = _create(
        "convnextv2_tiny.fcmae_ft_in22k_in1k",
        pretrained,
        _convnext_filter,
        num_classes=num_classes,
        drop_path_rate=drop_path_rate,
        **kw,
    )
    stem = nn.Conv2d(3, model.stem[0].out_channels, kernel_size=2, stride=2)
    trunc_normal_(stem.weight, std=0.02)
    nn.init.zeros_(stem.bias)
    model.stem[0] = stem
    return model


def _deit_p4(
    arch: str, num_classes: int, pretrained: Pretrained, drop_path_rate: float = 0.1, img_size: int = 32, **kw
) -> nn.Module:
    return _create(
        f"{arch}.fb_in1k",
        pretrained,
        partial(_vit_filter, adapt_layer_scale=True),
        img_size=img_size,  # 32 px (CIFAR); another side for a folder dataset's --data.image_size
        patch_size=4,
        num_classes=num_classes,
        drop_path_rate=drop_path_rate,
        **kw,
    )


def _dinov2_vits14(num_classes: int, pretrained: Pretrained, img_size: int = 224, **kw) -> nn.Module:
    # Always headless: the teacher's output is its CLS embedding, so num_classes is unused.
    del num_classes
    return _create("vit_small_patch14_dinov2.lvd142m", pretrained, _vit_filter, num_classes=0, img_size=img_size, **kw)


def _dinov2_vits14_probe(num_classes: int, pretrained: Pretrained, img_size: int = 224, **kw) -> nn.Module:
    # DINOv2 ViT-S/14 with a linear head on its CLS embedding: the linear probe (its module freezes the rest).
    model = _dinov2_vits14(0, pretrained, img_size=img_size, **kw)
    model.reset_classifier(num_classes)
    return model


def _weights(pretrained: bool, overlay: dict | None) -> Pretrained:
    """timm's ``pretrained``/``pretrained_cfg_overlay`` as kdbias's: None, ``"hub"`` or a file path."""
    if not pretrained:
        return None
    return (overlay or {}).get("file") or "hub"


def _cfg(mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> dict:
    """A kdbias model's pretrained config: its input statistics (None: the dataset's own)."""
    return {"mean": mean, "std": std, "input_size": (3, 32, 32), "num_classes": 10}


_IMAGENET = (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))
#: Read by timm's ``register_model`` (this module's ``default_cfgs``): ``timm.models.get_pretrained_cfg(name)``.
default_cfgs = generate_default_cfgs(
    {
        "resnet18_cifar": _cfg(None, None),
        "convnextv2_tiny_cifar": _cfg(*_IMAGENET),
        "deit_tiny_p4": _cfg(None, None),
        "deit_small_p4": _cfg(None, None),
        "dinov2_vits14": {**_cfg(*_IMAGENET), "input_size": (3, 224, 224), "num_classes": 0},
        "dinov2_vits14_probe": {**_cfg(*_IMAGENET), "input_size": (3, 224, 224)},
    }
)


# timm entry points: ``timm.create_model("resnet18_cifar", num_classes=10)`` once kdbias is imported.
# ``pretrained=True`` means the hub, or the file in ``pretrained_cfg_overlay={"file": ...}``.
@register_model
def resnet18_cifar(pretrained: bool = False, pretrained_cfg_overlay: dict | None = None, **kw) -> nn.Module:
    kw.pop("pretrained_cfg", None), kw.pop("cache_dir", None)
    return _resnet18_cifar(kw.pop("num_classes", 10), _weights(pretrained, pretrained_cfg_overlay), **kw)


@register_model
def convnextv2_tiny_cifar(pretrained: bool = False, pretrained_cfg_overlay: dict | None = None, **kw) -> nn.Module:
    kw.pop("pretrained_cfg", None), kw.pop("cache_dir", None)
    return _convnextv2_tiny_cifar(kw.pop("num_classes", 10), _weights(pretrained, pretrained_cfg_overlay), **kw)


@register_model
def deit_tiny_p4(pretrained: bool = False, pretrained_cfg_overlay: dict | None = None, **kw) -> nn.Module:
    kw.pop("pretrained_cfg", None), kw.pop("cache_dir", None)
    weights = _weights(pretrained, pretrained_cfg_overlay)
    return _deit_p4("deit_tiny_patch16_224", kw.pop("num_classes", 10), weights, **kw)


@register_model
def deit_small_p4(pretrained: bool = False, pretrained_cfg_overlay: dict | None = None, **kw) -> nn.Module:
    kw.pop("pretrained_cfg", None), kw.pop("cache_dir", None)
    weights = _weights(pretrained, pretrained_cfg_overlay)
    return _deit_p4("deit_small_patch16_224", kw.pop("num_classes", 10), weights, **kw)


@register_model
def dinov2_vits14(pretrained: bool = False, pretrained_cfg_overlay: dict | None = None, **kw) -> nn.Module:
    kw.pop("pretrained_cfg", None), kw.pop("cache_dir", None)
    return _dinov2_vits14(kw.pop("num_classes", 0), _weights(pretrained, pretrained_cfg_overlay), **kw)


@register_model
def dinov2_vits14_probe(pretrained: bool = False, pretrained_cfg_overlay: dict | None = None, **kw) -> nn.Module:
    kw.pop("pretrained_cfg", None), kw.pop("cache_dir", None)
    return _dinov2_vits14_probe(kw.pop("num_classes", 10), _weights(pretrained, pretrained_cfg_overlay), **kw)


MODEL_NAMES: tuple[str, ...] = tuple(default_cfgs)


def _check_timm_name(name: str) -> None:
    if not timm.is_model(name):
        raise ValueError(
            f"unknown model '{name}': neither a kdbias model ({', '.join(MODEL_NAMES)}) nor a timm model name "
            "(see timm.list_models())"
        )


def check_compile(compile: bool | str | None) -> None:
    """``ValueError`` unless ``compile`` is ``False``/``None``/``True`` or an installed backend
    (``torch.compiler.list_backends``)."""
    if compile in (False, None, True):
        return
    backends = torch.compiler.list_backends(exclude_tags=())
    if not isinstance(compile, str) or compile not in backends:
        raise ValueError(
            f"compile must be true, false or an installed torch.compile backend ({', '.join(backends)}), "
            f"got {compile!r}"
        )


#: timm factory arguments that read files or configurations: never taken from ``arch_kwargs``.
_FILE_ARGUMENTS = frozenset(
    {"checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict", "cache_dir"}
)

_NOT_SHAPE = frozenset({"self", "args", "kwargs", "num_classes", "device", "dtype"})


def check_arch_kwargs(name: str, kwargs: dict | None) -> None:
    """``ValueError`` unless every key of ``kwargs`` is a shape/regularisation argument of
    ``name``'s network class (e.g. ``depth``, ``img_size``, ``drop_path_rate``); arguments
    that make timm read a file (``checkpoint_path``, ``pretrained_cfg_overlay``, ...) never are."""
    if not kwargs:
        return
    network = unwrap_model(meta_model(name))
    allowed = set(inspect.signature(type(network)).parameters) - _FILE_ARGUMENTS - _NOT_SHAPE
    refused = sorted(set(kwargs) - allowed)
    if refused:
        raise ValueError(
            f"arch_kwargs {', '.join(refused)} are not arguments of {type(network).__name__} ({name}); valid: "
            f"{', '.join(sorted(allowed))}. Weights come only from pretrained= or a checkpoint's state_dict."
        )


def meta_model(name: str, num_classes: int = 10, **kw) -> nn.Module:
    """Architecture ``name`` on the meta device: its depth, widths and patch size, without
    memory, weights or downloads (checks before a run builds anything)."""
    with torch.device("meta"), torch.random.fork_rng(devices=[]):
        return build_model(name, num_classes=num_classes, pretrained=None, **kw)


def compiled(fn: Callable, compile: bool | str) -> Callable:
    """``fn`` under ``torch.compile`` when ``compile`` is true (a string names the backend,
    e.g. ``"inductor"``, or the cheap ``"eager"``/``"aot_eager"`` for tests), else ``fn``."""
    if compile is False or compile is None:
        return fn
    return torch.compile(fn) if compile is True else torch.compile(fn, backend=compile)


def build_model(name: str, num_classes: int = 10, pretrained: Pretrained = None, **kw) -> nn.Module:
    """Build model ``name``: one of ``MODEL_NAMES`` (the plan's CIFAR variants) or any timm
    model name, e.g. ``build_model("vit_small_patch16_224", img_size=32, patch_size=4)``.

    ``kw`` goes to timm (``drop_path_rate``, ``img_size``, ``patch_size``, ...).
    ``pretrained``: None, "hub", or a local weights file path. Raises ``PretrainedWeightsError``
    when the hub is unreachable or the file does not fit, ``FileNotFoundError`` for a missing
    file, ``ValueError`` for an unknown name. ``dinov2_vits14`` is headless and ignores
    ``num_classes``.
    """
    _check_timm_name(name)
    if name in MODEL_NAMES:  # registered above; timm passes the weights back as kdbias's ``pretrained``
        file = None if pretrained in (None, "hub") else {"file": str(pretrained)}
        return timm.create_model(
            name, pretrained=pretrained is not None, pretrained_cfg_overlay=file, num_classes=num_classes, **kw
        )
    arch = name.split(".")[0]
    state_filter = None  # timm's own filters adapt position embeddings and stems to kw
    if timm.models.is_model_in_modules(arch, ["vision_transformer"]):
        state_filter = _vit_filter
    elif timm.models.is_model_in_modules(arch, ["convnext"]):
        state_filter = _convnext_filter
    return _create(name, pretrained, state_filter, num_classes=num_classes, **kw)


def model_input_stats(name: str, pretrained: Pretrained = None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) per RGB channel the model expects, or None for the dataset's own statistics.

    The plan's models have fixed statistics (ImageNet's for ConvNeXt V2 and DINOv2). Any
    other timm model expects its pretrained configuration's statistics when it is built
    with pretrained weights, and the dataset's own when it is trained from scratch.
    """
    _check_timm_name(name)
    if name in MODEL_NAMES:
        cfg = timm.models.get_pretrained_cfg(name)
        return None if cfg.mean is None else (tuple(cfg.mean), tuple(cfg.std))
    if pretrained is None:
        return None
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or cfg.mean is None or cfg.std is None:
        return None
    return tuple(cfg.mean), tuple(cfg.std)


__all__ = [
    "MODEL_NAMES",
    "PretrainedWeightsError",
    "build_model",
    "check_arch_kwargs",
    "check_compile",
    "compiled",
    "meta_model",
    "model_input_stats",
    "unwrap_model",
]


def classifier_names(name: str) -> tuple[str, ...]:
    """The classifier module names of architecture ``name`` (timm's ``pretrained_cfg["classifier"]``:
    ``("fc",)`` for a ResNet, ``("head.fc",)`` for a ConvNeXt, ``("head",)`` for a ViT)."""
    cfg = getattr(meta_model(name, num_classes=1), "pretrained_cfg", None) or {}
    found = cfg.get("classifier") or ()
    return (found,) if isinstance(found, str) else tuple(found)


def state_head_classes(name: str, shapes: Mapping[str, object]) -> int:
    """Rows of the first classifier weight of ``name`` in ``shapes`` (``{key: shape}``); 0 when
    the state has none (a headless export, or a 1-D tensor there)."""
    for classifier in classifier_names(name):
        shape = shapes.get(f"{classifier}.weight")
        if shape is not None and len(shape) == 2:
            return int(shape[0])
    return 0

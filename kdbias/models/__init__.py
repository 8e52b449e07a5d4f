"""Models of the experiment matrix (``build_model``) and taps on their blocks and attention."""

from kdbias.models.build import (
    MODEL_NAMES,
    PretrainedWeightsError,
    build_model,
    check_arch_kwargs,
    check_compile,
    compiled,
    meta_model,
    model_input_stats,
    unwrap_model,
)
from kdbias.models.heads import head_classes
from kdbias.models.input_adapter import InputAdapter
from kdbias.models.taps import (
    attention_maps,
    block_modules,
    block_outputs,
    check_block_indices,
    forward_features_and_blocks,
    is_vit,
    materialized_attention,
    num_blocks,
    num_prefix_tokens_of,
    patch_size_of,
)

__all__ = [
    "InputAdapter",
    "MODEL_NAMES",
    "PretrainedWeightsError",
    "attention_maps",
    "block_modules",
    "block_outputs",
    "build_model",
    "check_arch_kwargs",
    "check_block_indices",
    "check_compile",
    "compiled",
    "head_classes",
    "forward_features_and_blocks",
    "is_vit",
    "materialized_attention",
    "meta_model",
    "model_input_stats",
    "num_blocks",
    "num_prefix_tokens_of",
    "patch_size_of",
    "unwrap_model",
]

"""Throughput, overhead and cost figures of every run of the experiment matrix.

Tooling, not library: nothing in ``kdbias`` imports it. Entry point::

    python -m experiments.benchmark --help
    python -m experiments.benchmark --dry-run --json bench.json     # every stage, tiny, CPU
    bash experiments/benchmark/gpu_check.sh [--dry-run]             # the one-command GPU check

Modules:

- :mod:`.measure`: pure arithmetic (step time, ratios, overhead, MFU) and probes (FLOP
  counter, bf16 matmul rate, host-read and CUDA-sync counters, dynamo counters);
- :mod:`.experiment`: the runs of the matrix (from :mod:`kdbias.registry`) and the real
  experiment Trainer built through :class:`kdbias.cli.KDBiasCLI`;
- :mod:`.train_step`: per-run step throughput, host syncs, and Lightning vs a plain loop;
- :mod:`.data_path`: kdbias's uint8 + on-device augmentation vs torchvision's PIL pipeline;
- :mod:`.teacher_cost`: the teacher's share of step FLOPs, DINOv2 at 224 vs 112 px;
- :mod:`.train_check`: a timed bf16 exp3 run (loss falls, no recompiles after warm-up);
- :mod:`.table`: the JSON file (atomic, merged stage by stage) and the printed table;
  importable without torch, so the shell script can record stage exit codes cheaply.

This ``__init__`` imports nothing heavy on purpose (``python -m experiments.benchmark.table``).
"""

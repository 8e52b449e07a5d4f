"""exp_vit_kl: see `python experiments/exp_vit_kl.py --help` and kdbias.registry."""

from kdbias.cli import main

if __name__ == "__main__":
    main("exp_vit_kl")

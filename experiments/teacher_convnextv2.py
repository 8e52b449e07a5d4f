"""teacher_convnextv2: see `python experiments/teacher_convnextv2.py --help` and kdbias.recipes.TEACHER_CONVNEXTV2."""

from kdbias.recipes import TEACHER_CONVNEXTV2

if __name__ == "__main__":
    TEACHER_CONVNEXTV2.main()

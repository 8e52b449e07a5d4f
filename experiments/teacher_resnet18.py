"""teacher_resnet18: see `python experiments/teacher_resnet18.py --help` and kdbias.recipes.TEACHER_RESNET18."""

from kdbias.recipes import TEACHER_RESNET18

if __name__ == "__main__":
    TEACHER_RESNET18.main()

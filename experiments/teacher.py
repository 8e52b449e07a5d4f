"""A teacher of your own: `python experiments/teacher.py --name my_r34 --model.arch resnet34 [--smoke]`.

Trains a TeacherModule with the ResNet-18 teacher's recipe and presets under runs/<name>/ (any
--model.arch, optionally --model.pretrained WEIGHTS); students distil from it with
--model.teacher run:<name>. See `python experiments/teacher.py --name NAME --help`.
"""

import sys
from pathlib import Path

from kdbias.cli import input_error, main, own_teacher

if __name__ == "__main__":
    args = sys.argv[1:]
    given = [k for k, a in enumerate(args) if a == "--name" or a.startswith("--name=")]
    if len(given) != 1:
        raise input_error("teacher.py", ValueError("give the teacher run's name once: --name NAME (runs/NAME/)"))
    k = given[0]
    name = args[k].partition("=")[2] if "=" in args[k] else (args[k + 1] if k + 1 < len(args) else "")
    del args[k : k + (1 if "=" in args[k] else 2)]
    try:
        experiment = own_teacher(name)
    except ValueError as error:
        raise input_error("teacher.py", error) from None
    main(experiment, Path(__file__).resolve().parent / "configs", args)

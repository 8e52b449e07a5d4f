"""A teacher of your own: `python experiments/teacher.py --name my_r34 --model.arch resnet34 [--smoke]`.

Trains a TeacherModule with the ResNet-18 teacher's recipe and presets under runs/<name>/ (any
--model.arch, optionally --model.pretrained WEIGHTS); students distil from it with
--model.teacher run:<name>. The same as `python -m kdbias.run teacher --name NAME ...`.
"""

import sys

from kdbias.run import OWN_TEACHER, main

if __name__ == "__main__":
    main([OWN_TEACHER, *sys.argv[1:]])

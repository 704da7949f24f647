"""`python -m landmarks` with the tests' tiny_bn backbone registered (tests/training_helpers.py):
the training tests run the real command line in a subprocess without EfficientNetB0's 40 s
build. Run as `python tests/train_cli.py train --config FILE`."""

from __future__ import annotations

import sys

from training_helpers import register_tiny_bn

from landmarks.cli import main

if __name__ == "__main__":
    register_tiny_bn()
    sys.exit(main(sys.argv[1:]))

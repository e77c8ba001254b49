"""``python -m unsupervised_seg``: the same command line as ``unsupervised-seg``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m pacbayes_sft.cli``: the same as the ``pacbayes-sft`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())

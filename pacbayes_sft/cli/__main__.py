"""``python -m pacbayes_sft.cli``: the same as the ``pacbayes-sft`` command."""

import sys

from . import main

sys.exit(main())

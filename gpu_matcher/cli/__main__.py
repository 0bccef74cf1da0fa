"""``python -m gpu_matcher.cli``: the same as the ``lstmvis`` command."""

import sys

from gpu_matcher.cli import main

sys.exit(main())

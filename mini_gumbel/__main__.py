"""``python -m mini_gumbel ...`` is ``mini-gumbel ...``."""
import sys

from .experiment.cli import main

sys.exit(main())

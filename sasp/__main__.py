"""``python -m sasp ...`` (and ``torchrun -m sasp compare ...``): the ``sasp`` command."""
import sys

from .cli import main

sys.exit(main())

"""``python -m sasp.train ...`` (and ``torchrun -m sasp.train``, ``accelerate launch -m sasp.train``)."""
import sys

from .command import main

sys.exit(main())

"""``python -m sasp.evaluate [compare] ...`` (also under ``torchrun -m sasp.evaluate``)."""
import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m tinyldm`` is the ``tinyldm`` command."""

import sys

from tinyldm.cli import main

sys.exit(main())

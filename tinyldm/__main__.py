"""``python -m tinyldm`` is the ``tinyldm`` command."""

import sys

from tinyldm.cli.main import main

sys.exit(main())

"""``python -m aebench``: the aebench command."""

import sys

from aebench.cli.main import main

sys.exit(main())

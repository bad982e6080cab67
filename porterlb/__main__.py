"""``python -m porterlb``: the ``porterlb`` command."""

import sys

from porterlb import cli

sys.exit(cli.main())

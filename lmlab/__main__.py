"""``python -m lmlab`` runs the command line (see lmlab.cli)."""

import sys

from lmlab.cli import main

sys.exit(main())

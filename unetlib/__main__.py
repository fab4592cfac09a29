"""``python -m unetlib`` runs the command line."""

import sys

from unetlib.cli import main

sys.exit(main())

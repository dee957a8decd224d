"""``python -m dicomnode`` runs the CLI."""

import sys

from dicomnode.cli import main

sys.exit(main())

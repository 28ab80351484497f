"""``python -m dicomfs``."""

import sys

from dicomfs.app.cli import main

sys.exit(main())

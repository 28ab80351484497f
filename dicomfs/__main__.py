"""``python -m dicomfs``."""

import sys

from dicomfs.cli import main

sys.exit(main())

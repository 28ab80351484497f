#!/usr/bin/env python3
"""The historic ``dicomfs.py`` entry point: same program as ``dicomfs``."""
import sys

from dicomfs.cli import main

if __name__ == "__main__":
    sys.exit(main())

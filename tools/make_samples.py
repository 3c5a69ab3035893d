#!/usr/bin/env python
"""Write the generated sample set the wheel ships: ``python tools/make_samples.py [tests/data/shapes8]``."""
import sys

from detectres.apps.samples import main

if __name__ == "__main__":
    sys.exit(main())

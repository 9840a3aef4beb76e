"""``python -m pipeline`` is the ``porelab`` command."""

import sys

from pipeline.cli.main import main

sys.exit(main())

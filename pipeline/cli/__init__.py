"""The ``porelab`` command line: one verb per user task."""

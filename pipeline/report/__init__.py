"""The run report: one self-contained HTML page (PNG plots embedded) per run folder.

- :mod:`~pipeline.report.build` — :func:`write_report`: sections from manifest.json and the run's stores.
- :mod:`~pipeline.report.plots` — the figures (matplotlib, PNG bytes).
- :mod:`~pipeline.report.html` — escaping, tables, embedded images, the page.
"""

from pipeline.report.build import build_page, write_report

__all__ = ["write_report", "build_page"]

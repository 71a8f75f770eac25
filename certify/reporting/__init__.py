"""Rendering: results → rich tables, CSV, JUnit XML, Markdown and PDF.

Every renderer reads the dataclasses the library returns or the results JSON built by
:mod:`certify.results`; none computes a number of its own, so what a table or a report shows
equals the JSON.  Library code never prints: the CLI hands these renderables to rich.

- :mod:`.strings`: the strings every renderer shares (percentages, model labels, summary rows,
  gate rows), so a table, the Markdown and the PDF say the same thing;
- :mod:`.tables`: rich tables of the commands (certify, attack, lipschitz, data-lipschitz,
  analyze/report, gate, demo);
- :mod:`.examples_csv`: the per-example CSV files of certify and attack;
- :mod:`.junit`: gate results as JUnit XML;
- :mod:`.markdown`: the Markdown report and gate summary;
- :mod:`.pdf`: the PDF report.

Import the module you need; this package imports none of them, so loading one stays cheap.
"""

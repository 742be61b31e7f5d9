"""Choosing the generator (``aprendiz evaluate``): every candidate model answers the same evaluation
set through the platform's own entrance; the answers are scored (``scorers``, ``judge``), and quality,
latency and cost per 1,000 conversations are compared (``summary``) and written up with a
recommendation per budget (``report``).

- ``cases``: an evaluation set (``evals/<name>/cases.jsonl`` in the store) and its schema.
- ``scorers``: exact and normalised match, contains, regex, chrF and ROUGE-L against a reference, JSON schema.
- ``judge``: a model from the candidate list grading answers against a rubric.
- ``runner``: sending the cases with bounded concurrency, retries and a resumable results file.
- ``summary``: per-model figures with bootstrap intervals, the Pareto front, the recommendation.
- ``report``: the HTML report and its plot.
"""

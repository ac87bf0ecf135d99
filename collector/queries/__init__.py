"""The store's questions, one module per consumer; the only SQL outside the collector's own.

- ``collector.queries.guard``: the canary guard's arms, scores, costs and past decisions;
  ``record_rollout`` writes its decisions (and the operator's);
- ``collector.queries.evals``: unscored request spans and their images, scored verdicts
  for clustering, and the writers of scores and clusters;
- ``collector.queries.optimizer``: scored requests with their image features, replay samples;
- ``collector.queries.summary``: the demo's phase and paired comparisons, the dry run's rows;
- ``collector.queries.autopilot``: the autopilot's traffic, spend and cluster readings, and the
  writer of its decisions (``autopilot_events``).

Each function takes an open connection (or a store path) and typed parameters, binds every
value as a parameter, and returns rows, dataclasses or polars frames. Callers keep their
logic and never see SQL text (``tests/unit/test_sql_ownership.py`` checks that).
"""

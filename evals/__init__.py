"""Evaluators over the trace store, and failure clustering.

Entry points (nothing is imported here, so ``import evals`` stays cheap):

- ``evals.runner.run_evals(db_path, ...)``: score request spans not yet scored;
- ``evals.clusters.find_failure_clusters(db_path, ...)`` / ``write_clusters(...)``;
- ``evals.references.load_reference_file(db_path, path)``: load ground truth;
- ``evals.base``: ``EvalCase``, ``Score``, ``Evaluator``, ``@evaluator``;
- ``evals.registry``: ``register``, ``get``, ``all_evaluators``.

See docs/evals.md.
"""

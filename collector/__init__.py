"""collector: spans into the shared DuckDB store.

- ``collector.schema``: tables and ordered migrations (the store contract);
- ``collector.store``: ``open_store`` (short-lived, lock-retrying connections),
  ``fetch_df``, ``insert_rows``, ``load_references``;
- ``collector.rows``: ``SpanRecord`` and the pure ``span_to_rows`` mapping,
  with decoders from SDK spans, OTLP protobuf and OTLP/JSON (``collector.otlp``);
- ``collector.columns``: ``spans_to_batch``, the same mapping in bulk (Arrow columns),
  which the exporter and the receiver write through ``store.write_tables``;
- ``collector.append``: idempotent appends to the span tables (no primary-key index);
- ``collector.exporter``: ``DuckDBSpanExporter`` for the OTel SDK;
- ``collector.receiver``: the OTLP/HTTP receiver (``create_receiver_app``,
  ``serve_receiver``), with optional forwarding; it acknowledges exports once spooled;
- ``collector.spool``: ``Spool``, the write-ahead spool (segments, CRC, fsync batching, cap);
- ``collector.delivery``: ``SpoolingOtlpExporter``, a worker's OTLP export that spools what
  the collector does not take and replays it;
- ``collector.queries``: one typed query module per consumer (guard, evals, optimizer,
  summary) and the ``rollouts`` / score / cluster writers; no other package writes SQL;
- ``collector.blobs``: the content-addressed blob store's layout (write, read, path);
- ``collector.spend`` and ``collector.parquet``: reports and exports.

Nothing is imported here, so ``import collector`` stays cheap.
"""

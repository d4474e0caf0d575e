"""The result store: the contract between evaluation (which writes it) and analysis (which
reads only it). One JSON record per (run, checkpoint step, dataset, task) under
``<root>/<run id>/eval/step_XXXXXXXX/`` (format in :mod:`store.records`), and its conversion to
and from the paper's CSV layout (:mod:`store.export`), and other studies' published results read
into records (:mod:`store.imports`)."""

from store.records import (  # noqa: F401
    REQUIRED_KEYS,
    SCHEMA_VERSION,
    benchmark_name,
    check_record,
    metric,
    paper_name,
    read_record,
    read_records,
    record_path,
    records_frame,
    records_to_frame,
    write_record,
)

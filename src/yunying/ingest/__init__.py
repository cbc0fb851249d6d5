"""Ingestion: validation into the one event model, identity resolution, the single writer."""

from yunying.ingest.identity import IdentityResolver, apply_property_ops, person_id_for
from yunying.ingest.model import Event, FieldError, ValidatedBatch, validate_batch, validate_event
from yunying.ingest.writer import Writer, WriteResult, WriterStopped

__all__ = [
    "Event",
    "FieldError",
    "IdentityResolver",
    "ValidatedBatch",
    "WriteResult",
    "Writer",
    "WriterStopped",
    "apply_property_ops",
    "person_id_for",
    "validate_batch",
    "validate_event",
]

"""Schemas that stay the same from export to export: one object per event, beside the exports.

``<prefix>_schemas/<event name>.json`` holds what every earlier export of the event wrote, one
section per format that has a schema (``csv``: its columns in order; ``parquet``: its columns and
their types). A CSV or Parquet writer settles its export's schema once every record was read and
before its first file: it reads the object, extends the section (new columns at the end; a column
keeps its type for good; the format's module decides how), writes it back only if nobody wrote it
meanwhile (a generation precondition; else it reads and extends again), and writes its files with
what is stored. Two exports of one event at once therefore end with one schema holding both, and
each wrote files within it. One read and at most one write per event and export.

The object is JSON and meant to be read, and edited with care: removing a column from it lets a
later export add it again at the end; deleting the object starts the event's schema afresh.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from ct_airflow_provider.export.claim import ClaimStore
from ct_airflow_provider.export.errors import ExportError

SCHEMA_CONTENT_TYPE = "application/json"
#: The layout of the stored document; a later layout would be read and rewritten by newer code.
SCHEMA_VERSION = 1
#: Writes that lost the race to another export before this one gives up (each reads and extends again).
_MAX_ATTEMPTS = 30


class SchemaConflictError(ExportError):
    """The stored schema kept changing under this export (many exports of one event at once)."""


class StoredSchemaError(ExportError, ValueError):
    """The stored schema object cannot be read (edited into something that is not its layout)."""


#: Extends a format's stored section (``None`` when it has none yet) with an export's own schema;
#: returns the section to store. Called again after a lost race, so it must not change its input.
Extend = Callable[[Any], Any]


class SchemaSettler(Protocol):
    """What a writer needs of the stored schema: :meth:`StoredSchema.settle`."""

    def settle(self, section: str, extend: Extend) -> Any: ...


class StoredSchema:
    """The stored schema of one event (or of profile exports) in the bucket.

    :param store: the bucket (conditional reads and writes of small objects).
    :param object_name: the schema object, ``<prefix>_schemas/<event name>.json``
        (:meth:`~ct_airflow_provider.export.naming.ExportNaming.schema_object_name`).
    :param log: where a changed schema is reported.
    """

    def __init__(self, store: ClaimStore, object_name: str, log: logging.Logger | None = None) -> None:
        self.store = store
        self.object_name = object_name
        self.log = log or logging.getLogger(__name__)

    def read(self) -> dict[str, Any]:
        """The stored document (``{"version": 1}`` and no section when there is none yet)."""
        return self._read()[0]

    def settle(self, section: str, extend: Extend) -> Any:
        """Extend one format's section with ``extend`` and store it; return what is stored.

        :param section: ``csv`` or ``parquet``.
        :param extend: the format's rule (see :data:`Extend`).
        :raises SchemaConflictError: if other exports kept winning the race for a long while.
        :raises StoredSchemaError: if the object is not a schema document.
        """
        for attempt in range(_MAX_ATTEMPTS):
            document, generation = self._read()
            current = document.get(section)
            extended = extend(current)
            if extended == current:
                return current
            document[section] = extended
            data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
            if self.store.write_object_if_generation(data, self.object_name, SCHEMA_CONTENT_TYPE, generation):
                verb = "Created" if current is None else "Extended"
                self.log.info("%s the %s schema in %s", verb, section, self.object_name)
                return extended
            # Another export wrote it first: read its schema and extend that (jittered, so that
            # several racing exports do not keep colliding).
            time.sleep(random.uniform(0.05, 0.2) * min(attempt + 1, 5))
        raise SchemaConflictError(
            f"The schema {self.object_name} changed {_MAX_ATTEMPTS} times while this export tried to "
            "extend it: too many exports of this event at once. Retry the task."
        )

    def _read(self) -> tuple[dict[str, Any], int]:
        found = self.store.read_object_generation(self.object_name)
        if found is None:
            return {"version": SCHEMA_VERSION}, 0
        data, generation = found
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise StoredSchemaError(
                f"The schema {self.object_name} is not JSON ({exc}). Fix it, or delete it to start the "
                "event's schema afresh (later files may then differ from earlier ones)."
            ) from exc
        if not isinstance(document, dict) or document.get("version") != SCHEMA_VERSION:
            raise StoredSchemaError(
                f"The schema {self.object_name} is not a version {SCHEMA_VERSION} schema document "
                f'(an object with "version": {SCHEMA_VERSION}). Fix it, or delete it to start afresh.'
            )
        return document, generation

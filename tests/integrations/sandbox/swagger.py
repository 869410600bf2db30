"""CC's Swagger 2.0 contract as JSON Schema, for conformance tests.

Swagger 2.0 definitions are nearly JSON Schema draft 4: ``$ref: "#/definitions/X"`` resolves
against a root that holds ``definitions``, and ``example``, ``readOnly``, ``title`` and ``x-*``
keys are ignored by the validator. Patches applied to the spec before use:

1. ``maxItems: 0`` is dropped wherever it appears: a known spec bug on
   ``ListActivityRemoveContacts`` / ``ListActivityAddContacts`` arrays whose descriptions say
   50 or 500, the limits CC documents at
   https://developer.constantcontact.com/api_guide/bulk_activities.html.
2. ``x-*`` vendor extensions are removed (documentation only).

Formats ``date-time``, ``date`` and ``uuid`` are checked strictly (jsonschema only checks
formats it is given a checker for).

The spec is read from ``$CC_SWAGGER_YAML`` or ``<workspace>/shared/cc-api/swagger.yaml``;
tests that need it are skipped, with that reason, when neither exists.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

# CC's official v3 spec, kept beside the tests (CC_SWAGGER_YAML checks against another copy).
SPEC_PATH = Path(
    os.environ.get("CC_SWAGGER_YAML", Path(__file__).resolve().parent / "cc_v3_swagger.yaml")
)

DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)

FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("date-time")(
    lambda value: not isinstance(value, str) or bool(DATE_TIME.match(value))
)
FORMATS.checks("date")(lambda value: not isinstance(value, str) or bool(DATE.match(value)))
FORMATS.checks("uuid")(lambda value: not isinstance(value, str) or bool(UUID.match(value)))


def _patch(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _patch(value)
            for key, value in node.items()
            if not key.startswith("x-") and not (key == "maxItems" and value == 0)
        }
    if isinstance(node, list):
        return [_patch(item) for item in node]
    return node


@functools.cache
def spec() -> dict[str, Any]:
    if not SPEC_PATH.exists():
        pytest.fail(f"CC's swagger spec is not at {SPEC_PATH} (CC_SWAGGER_YAML names another)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open() as stream:
        return _patch(yaml.load(stream, Loader=loader))


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    """The schema the spec declares for ``method path`` answering ``status`` (path without
    the ``/v3`` base path, e.g. ``/contacts/{contact_id}``)."""
    operation = spec()["paths"][path][method.lower()]
    return operation["responses"][str(status)]["schema"]


def definition(name: str) -> dict[str, Any]:
    return {"$ref": f"#/definitions/{name}"}


def validate(instance: Any, schema: dict[str, Any]) -> None:
    """Validate against ``schema`` with the spec's definitions in scope; raises on mismatch."""
    root = {**schema, "definitions": spec()["definitions"]}
    validator = jsonschema.Draft4Validator(root, format_checker=FORMATS)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        details = "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
        raise AssertionError(f"response does not match the spec: {details}")


def assert_api_error(response: Any, status: int) -> list[dict[str, str]]:
    """CC's service error: the status, and an ``APIErrorSchema`` array body."""
    assert response.status_code == status, response.text
    body = response.json()
    validate(body, definition("APIErrorSchema"))
    assert body and all(item.get("error_key") and item.get("error_message") for item in body)
    return body


def assert_gateway_error(response: Any, status: int, error_key: str) -> dict[str, str]:
    """CC's gateway error: one ``AuthorizationErrorSchema`` object."""
    assert response.status_code == status, response.text
    body = response.json()
    validate(body, definition("AuthorizationErrorSchema"))
    assert body["error_key"] == error_key
    return body

"""docs/asyncapi.json is the document the FastStream app generates, and
docs/command-schemas.json what ``subledger schema`` prints: both kept in step."""

from __future__ import annotations

import json
from pathlib import Path

from commands.bus_app import asyncapi_document
from commands.schemas import COMMAND_TYPES

DOCS = Path(__file__).parents[2] / "docs"
DOCUMENT = DOCS / "asyncapi.json"


def test_the_published_document_is_the_generated_one() -> None:
    assert json.loads(DOCUMENT.read_text()) == asyncapi_document(), (
        "regenerate it: subledger asyncapi > docs/asyncapi.json"
    )


def test_it_describes_every_command_and_the_replies() -> None:
    document = asyncapi_document()
    schemas = document["components"]["schemas"]
    documented = {
        schema["properties"]["type"]["const"]
        for schema in schemas.values()
        if "type" in schema.get("properties", {}) and "const" in schema["properties"]["type"]
    }
    assert documented >= set(COMMAND_TYPES)
    assert {"Reply", "RejectionRecord", "DeadLetter", "IntegrationEvent"} <= set(schemas)
    assert {c["address"] for c in document["channels"].values()} >= {
        "subledger:commands",
        "{reply_to}",
        "subledger:rejections",
        "subledger:dead",
        "subledger:events",
    }


def test_the_published_command_schemas_are_the_models_own() -> None:
    published = json.loads((DOCS / "command-schemas.json").read_text())
    assert published == {
        kind: model.model_json_schema() for kind, model in COMMAND_TYPES.items()
    }, "regenerate it: subledger schema > docs/command-schemas.json"
    assert all(schema["required"][0] == "type" for schema in published.values())

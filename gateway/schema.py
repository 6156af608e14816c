"""JSON Schema (editor completion) and operator reference, both generated from the models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gateway.operators import REGISTRY
from gateway.spec import OUTPUTS, SOURCES, PipelineHeader

SCHEMA_ID = "https://fogline.dev/schema/pipeline.json"


def _single_key(name: str, model: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs.update(schema.pop("$defs", {}))
    return {
        "type": "object",
        "properties": {name: schema},
        "required": [name],
        "additionalProperties": False,
        "description": (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else name,
    }


def pipeline_schema() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    top = PipelineHeader.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs.update(top.pop("$defs", {}))
    sections: dict[str, dict[str, type[BaseModel]]] = {
        "sources": dict(SOURCES),
        "steps": {n: op.Config for n, op in REGISTRY.items()},
        "outputs": dict(OUTPUTS),
    }
    for section, models in sections.items():
        items = [_single_key(name, model, defs) for name, model in sorted(models.items())]
        top["properties"][section]["items"] = {"oneOf": items}
    top["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    top["$id"] = SCHEMA_ID
    top["title"] = "Fogline pipeline"
    top["$defs"] = dict(sorted(defs.items()))
    return top


def operators_markdown() -> str:
    """docs/operators.md: every source, step and output with its fields."""
    lines = [
        "# Pipeline reference",
        "",
        "Generated from the config models by `fogline pipeline docs`; a test keeps it current.",
        "",
    ]
    sections: tuple[tuple[str, dict[str, Any]], ...] = (
        ("Sources", dict(SOURCES)),
        ("Steps", dict(REGISTRY)),
        ("Outputs", dict(OUTPUTS)),
    )
    for title, models in sections:
        lines += [f"## {title}", ""]
        for name, model in models.items():
            doc = _module_doc(model)
            config: type[BaseModel] = getattr(model, "Config", model)
            lines += [f"### `{name}`", "", doc, ""]
            lines += ["| field | type | default | description |", "| --- | --- | --- | --- |"]
            schema = config.model_json_schema(by_alias=True)
            required = set(schema.get("required", []))
            for field, prop in schema.get("properties", {}).items():
                default = "required" if field in required else f"`{prop.get('default')!r}`"
                desc = prop.get("description", "")
                lines.append(f"| `{field}` | {_type(prop)} | {default} | {desc} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _module_doc(model: Any) -> str:
    import sys  # noqa: PLC0415

    module = sys.modules[model.__module__]
    doc = (module.__doc__ if hasattr(model, "Config") else model.__doc__) or ""
    return str(doc).strip()


def _type(prop: Any) -> str:
    if not isinstance(prop, dict):
        return "any"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if "anyOf" in prop:
        return " \\| ".join(_type(p) for p in prop["anyOf"])
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map of {_type(prop['additionalProperties'])}"
    return str(kind)

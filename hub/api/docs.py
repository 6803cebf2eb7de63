"""What the OpenAPI document says about bodies the handlers read themselves."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def inline_schema(model: type[BaseModel], *, by_alias: bool = True) -> dict[str, Any]:
    """The model's JSON schema with every local `#/$defs/...` reference replaced by its definition,
    for a request body documented by hand (`openapi_extra`), where `$defs` would not resolve."""
    schema = model.model_json_schema(by_alias=by_alias)
    inlined: dict[str, Any] = _inline(schema, schema.get("$defs", {}))
    return inlined


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node

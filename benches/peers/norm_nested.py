"""Shared by the nested-table peer scripts: rows as canonical JSON values.

Every engine hands nested values in its own form (pyarrow maps as lists of pairs,
Polars maps as lists of {key, value} structs, DuckDB maps as dicts); `normalize`
turns a row into plain JSON by the table's Delta schema: structs and maps as objects
(map keys as text), lists as lists, floats as floats.
"""
import json


def _norm(v, dtype):
    if v is None:
        return None
    if isinstance(dtype, str):
        if dtype in ("float", "double"):
            return float(v)
        return v
    kind = dtype["type"]
    if kind == "struct":
        get = (lambda k: v.get(k)) if isinstance(v, dict) else (lambda k: getattr(v, k, None))
        return {f["name"]: _norm(get(f["name"]), f["type"]) for f in dtype["fields"]}
    if kind == "array":
        return [_norm(x, dtype["elementType"]) for x in v]
    if kind == "map":
        if isinstance(v, dict):
            if set(v.keys()) == {"key", "value"} and isinstance(v["key"], list):
                pairs = list(zip(v["key"], v["value"]))
            else:
                pairs = list(v.items())
        else:
            pairs = [(x["key"], x["value"]) if isinstance(x, dict) else tuple(x) for x in v]
        return {str(k): _norm(x, dtype["valueType"]) for k, x in pairs}
    raise ValueError(f"unknown Delta type {dtype}")


def normalize(rows, schema_json):
    """`rows` (dicts by column name) as canonical JSON values, sorted by `id`."""
    fields = json.loads(schema_json)["fields"]
    out = [{f["name"]: _norm(r.get(f["name"]), f["type"]) for f in fields} for r in rows]
    return sorted(out, key=lambda r: r["id"])

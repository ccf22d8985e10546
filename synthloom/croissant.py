"""croissant.json: Croissant 1.1 metadata with Responsible-AI fields, so dataset search tools
and `mlcroissant` can read the dataset without synthloom."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .features import Array, BoundingBoxes, ClassLabel, Feature, Features, Image, Points, Value

CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "prov": "http://www.w3.org/ns/prov#",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

def _data_type(dtype: str) -> str:
    if dtype == "bool":
        return "sc:Boolean"
    return "sc:Integer" if dtype[0] in "iu" else "sc:Float" if dtype[0] == "f" else "sc:Text"


def _source(column: str, json_path: str | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"fileSet": {"@id": "parquet-shards"}, "extract": {"column": column}}
    if json_path:
        source["transform"] = {"jsonPath": json_path}
    return source


def _shape_text(shape: tuple) -> str:
    return ",".join("-1" if d is None else str(d) for d in shape)


def feature_field(name: str, feature: Feature, record_set: str = "default") -> dict[str, Any]:
    """The Croissant field of one column, by its feature type."""
    field: dict[str, Any] = {"@type": "cr:Field", "@id": f"{record_set}/{name}", "name": name,
                             "source": _source(name)}
    if isinstance(feature, Image):
        field.update(dataType="sc:ImageObject", source=_source(name, "bytes"),
                     description="PNG image (Hugging Face Image struct: bytes, path)")
    elif isinstance(feature, ClassLabel):
        field.update(dataType="sc:Integer",
                     description="class index: " + ", ".join(f"{i}={n}" for i, n in enumerate(feature.names)))
    elif isinstance(feature, (Points, Array)):
        field.update(dataType=_data_type(feature.dtype), isArray=True, arrayShape=_shape_text(feature.shape),
                     description=feature.describe())
    elif isinstance(feature, BoundingBoxes):
        parts = {"bbox": ("sc:Float", "box [x, y, width, height] in pixels (COCO)"),
                 "category": ("sc:Integer", "category index: " + ", ".join(
                     f"{i}={n}" for i, n in enumerate(feature.categories))),
                 "score": ("sc:Float", "detector score; null for ground truth")}
        field.update(isArray=True, arrayShape="-1", description=feature.describe())
        field.pop("source")
        field["subField"] = []
        for part, (data_type, description) in parts.items():
            sub = {"@type": "cr:Field", "@id": f"{record_set}/{name}/{part}", "name": part, "dataType": data_type,
                   "description": description, "source": _source(name, part)}
            if part == "bbox":
                sub.update(isArray=True, arrayShape="4")
            field["subField"].append(sub)
    elif isinstance(feature, Value):
        field["dataType"] = _data_type(feature.dtype)
    else:  # Text and any other string-like feature
        field["dataType"] = "sc:Text"
    return field


def _labelers_run(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The labelers that ran on this version's shards, as the manifest records them (the build writes
    a record only for a labeler whose label-shard tasks produced the shards)."""
    return [record for record in manifest.get("labelers") or [] if isinstance(record, dict)]


def _tool_name(record: dict[str, Any]) -> str:
    return f"synthloom labeler '{record['kind']}' (code version {record.get('code_version', '?')})"


def _annotation_protocol(manifest: dict[str, Any]) -> str:
    text = "Labels come from the generator itself (the class of the source asset); "
    ran = _labelers_run(manifest)
    if not ran:
        return text + "no machine annotation tools were run"
    return text + "machine annotation, run on every generated shard: " + "; ".join(
        f"{_tool_name(r)} wrote {', '.join(r.get('columns', [])) or 'no columns'}" for r in ran)


def croissant_metadata(manifest: dict[str, Any], schema: pa.Schema | Features) -> dict[str, Any]:
    recipe = manifest["recipe"]
    name = recipe["name"]
    features = schema if isinstance(schema, Features) else \
        Features.from_arrow_schema(schema, class_names=manifest.get("classes"))
    fields = [feature_field(column, feature) for column, feature in features.items()]
    shard_sizes = sum(s["bytes"] for s in manifest["shards"])
    generator = manifest["generator"]
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.1",
        "name": name,
        "description": recipe.get("description") or f"Synthetic dataset '{name}' built by synthloom.",
        "version": manifest["version"],
        "license": recipe.get("license", "cc-by-4.0"),
        "url": f"file:{name}/{manifest['version']}",
        "datePublished": manifest["created_at"][:10],
        "creator": {"@type": "sc:Organization", "name": "synthloom"},
        "keywords": ["synthetic data", generator["kind"]],
        "rai:dataCollection": (
            f"Synthetic: generated by the synthloom '{generator['kind']}' generator from recipe "
            f"sha256 {manifest['recipe_sha256']} with root seed {manifest['seed']}; no data was collected from people."
        ),
        "rai:dataCollectionType": ["Synthetic data"],
        "rai:dataAnnotationProtocol": _annotation_protocol(manifest),
        "rai:machineAnnotationTools": [_tool_name(record) for record in _labelers_run(manifest)],
        "rai:dataLimitations": "Synthetic samples may be more uniform than real data; see the metrics in README.md.",
        "prov:wasGeneratedBy": {
            "@type": "prov:Activity",
            "name": f"synthloom build ({generator['kind']})",
            "description": f"synthloom {manifest['packages'].get('synthloom', '?')}, git {manifest.get('git_sha')}",
        },
        "prov:wasDerivedFrom": [
            {"@type": "prov:Entity", "name": str(src)} for src in manifest.get("derived_from", [])
        ],
        "distribution": [
            {
                "@type": "cr:FileSet",
                "@id": "parquet-shards",
                "name": "parquet-shards",
                "description": f"{len(manifest['shards'])} Parquet shards, {shard_sizes} bytes",
                "encodingFormat": "application/x-parquet",
                "includes": "data/*.parquet",
            }
        ],
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": "default",
                "name": "default",
                "description": "One row per synthetic sample.",
                "field": fields,
            }
        ],
    }

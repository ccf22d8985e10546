"""Load a croissant.json's records with mlcroissant and print them as JSON (images as their size and
mode, arrays as their shape), for the tests.

Run as a fresh process on purpose: in a process that imported `datasets`, pandas cannot compare the
dtype `datasets` registers for Array2D columns (huggingface/datasets#8375), and mlcroissant reads
Parquet through pandas. A plain mlcroissant user never imports `datasets`.

    python tests/croissant_records.py DATASET/croissant.json [RECORD_SET]
"""

import json
import sys

import mlcroissant as mlc
import numpy as np


def summary(value):
    if hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image
        return {"image": [value.size[0], value.size[1], value.mode]}
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, np.ndarray)):
        if len(value) and isinstance(value[0], dict):
            return [{k: summary(v) for k, v in item.items()} for item in value]
        return {"shape": list(np.asarray(value, dtype=object if len(value) == 0 else None).shape)}
    if isinstance(value, dict):
        return {k: summary(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def main() -> None:
    dataset = mlc.Dataset(jsonld=sys.argv[1])
    record_set = sys.argv[2] if len(sys.argv) > 2 else "default"
    metadata = dataset.metadata.to_json()
    records = [{k: summary(v) for k, v in r.items()} for r in dataset.records(record_set=record_set)]
    json.dump({"metadata": metadata, "records": records}, sys.stdout, default=str)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Parses an OpenMetrics exposition with the official Python client's parser (which rejects a
missing `# EOF`, a counter family named with `_total`, an uncanonical `le`, a sample out of its
family, ...), and checks that every family of the catalog is there with its kind.

    python3 tests/e2e/openmetrics_parse.py exposition.om examples/revel/metrics.toml
"""
import sys
import tomllib

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = open(sys.argv[1]).read()
catalog = tomllib.load(open(sys.argv[2], "rb"))["metrics"]
families = {f.name: f for f in text_string_to_metric_families(text)}
problems = []
for name, entry in catalog.items():
    kind = entry["type"]
    family = name.removesuffix("_total") if kind == "counter" else name
    if family not in families:
        problems.append(f"{family} ({kind}) is not in the exposition")
    elif families[family].type != kind:
        problems.append(f"{family} is a {families[family].type}, the catalog says {kind}")
samples = sum(len(f.samples) for f in families.values())
if problems or samples == 0:
    print("\n".join(problems) or "no sample", file=sys.stderr)
    sys.exit(1)
print(f"  {len(families)} families, {samples} samples parsed")

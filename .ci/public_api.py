#!/usr/bin/env python3
"""The public API of a crate, one item per line, from rustdoc's JSON output: every item reachable
from the crate root through public modules and re-exports (doc(hidden) ones are stripped by
rustdoc), with inherent methods, trait items, enum variants and public fields.

    python3 .ci/public_api.py target/doc/obs_runtime.json > obs-runtime/public-api.txt

`.ci/public-api.sh` regenerates the listings and fails when they differ from the committed ones,
so a change to the public surface shows in review."""
import json
import sys

doc = json.load(open(sys.argv[1]))
index = doc["index"]
out = set()


def kind(item):
    inner = item["inner"]
    return next(iter(inner)) if isinstance(inner, dict) else inner


def members(item, k, path):
    inner = item["inner"][k]
    if k == "enum":
        for v in inner.get("variants", []):
            out.add(f"variant {path}::{index[str(v)]['name']}")
    if k == "struct":
        shape = inner.get("kind", {})
        fields = shape.get("plain", {}).get("fields", []) if isinstance(shape, dict) else []
        for f in fields:
            field = index.get(str(f))
            if field and field.get("visibility") == "public":
                out.add(f"field {path}::{field['name']}")
    if k == "trait":
        for m in inner.get("items", []):
            out.add(f"{kind(index[str(m)])} {path}::{index[str(m)]['name']}")
    for i in inner.get("impls", []):
        imp = index.get(str(i))
        if not imp or imp["inner"]["impl"].get("trait") is not None:
            continue
        for m in imp["inner"]["impl"]["items"]:
            method = index[str(m)]
            if method.get("visibility") == "public":
                out.add(f"{kind(method)} {path}::{method['name']}")


def walk(item_id, path):
    item = index[str(item_id)]
    k = kind(item)
    if k == "module":
        for c in item["inner"]["module"]["items"]:
            walk(c, path + [index[str(c)].get("name") or ""])
    elif k == "use":
        use = item["inner"]["use"]
        target = use.get("id")
        here = path[:-1] + [use["name"]]
        if target is not None and str(target) in index:
            t = index[str(target)]
            if use.get("is_glob") and kind(t) == "module":
                for c in t["inner"]["module"]["items"]:
                    walk(c, path[:-1] + [index[str(c)].get("name") or ""])
            else:
                walk(target, here)
        else:
            out.add(f"use {'::'.join(here)} = {use.get('source')}")
    else:
        p = "::".join(path)
        out.add(f"{k} {p}")
        if k in ("struct", "enum", "trait", "union"):
            members(item, k, p)


root = index[str(doc["root"])]
walk(doc["root"], [root["name"]])
sys.stdout.write("".join(line + "\n" for line in sorted(out)))

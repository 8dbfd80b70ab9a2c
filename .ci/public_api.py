#!/usr/bin/env python3
"""The public API of a crate, one item per line, from rustdoc's JSON output (made with
`--document-hidden-items`): every item reachable from the crate root through public modules and
re-exports, with inherent methods, trait items, enum variants and public fields. Items hidden
from the documentation (`#[doc(hidden)]`, or inside such a module) are listed with `hidden `
before them, and must all be in the macros' seam, `__private`: the script fails on any other,
so machinery cannot leak into the public API again.

    python3 .ci/public_api.py target/doc/obs_runtime.json > obs-runtime/public-api.txt

`.ci/public-api.sh` regenerates the listings and fails when they differ from the committed ones,
so a change to the public surface shows in review."""
import json
import sys

doc = json.load(open(sys.argv[1]))
index = doc["index"]
out = set()
leaks = []
SEAM = "__private"


def hidden(item):
    return "doc(hidden)" in json.dumps(item.get("attrs", []))


def add(line, path, is_hidden):
    if is_hidden:
        out.add("hidden " + line)
        if SEAM not in path.split("::"):
            leaks.append(line)
    else:
        out.add(line)


def kind(item):
    inner = item["inner"]
    return next(iter(inner)) if isinstance(inner, dict) else inner


def members(item, k, path, is_hidden):
    inner = item["inner"][k]

    def member(m, line):
        add(line, path, is_hidden or hidden(m))

    if k == "enum":
        for v in inner.get("variants", []):
            member(index[str(v)], f"variant {path}::{index[str(v)]['name']}")
    if k == "struct":
        shape = inner.get("kind", {})
        fields = shape.get("plain", {}).get("fields", []) if isinstance(shape, dict) else []
        for f in fields:
            field = index.get(str(f))
            if field and field.get("visibility") == "public":
                member(field, f"field {path}::{field['name']}")
    if k == "trait":
        for m in inner.get("items", []):
            member(index[str(m)], f"{kind(index[str(m)])} {path}::{index[str(m)]['name']}")
    for i in inner.get("impls", []):
        imp = index.get(str(i))
        if not imp or imp["inner"]["impl"].get("trait") is not None:
            continue
        for m in imp["inner"]["impl"]["items"]:
            method = index[str(m)]
            if method.get("visibility") == "public":
                member(method, f"{kind(method)} {path}::{method['name']}")


def walk(item_id, path, is_hidden=False):
    item = index[str(item_id)]
    k = kind(item)
    is_hidden = is_hidden or hidden(item)
    if k == "module":
        for c in item["inner"]["module"]["items"]:
            walk(c, path + [index[str(c)].get("name") or ""], is_hidden)
    elif k == "use":
        use = item["inner"]["use"]
        target = use.get("id")
        here = path[:-1] + [use["name"]]
        if target is not None and str(target) in index:
            t = index[str(target)]
            if use.get("is_glob") and kind(t) == "module":
                for c in t["inner"]["module"]["items"]:
                    walk(c, path[:-1] + [index[str(c)].get("name") or ""], is_hidden)
            else:
                walk(target, here, is_hidden)
        else:
            add(f"use {'::'.join(here)} = {use.get('source')}", "::".join(here), is_hidden)
    else:
        p = "::".join(path)
        add(f"{k} {p}", p, is_hidden)
        if k in ("struct", "enum", "trait", "union"):
            members(item, k, p, is_hidden)


root = index[str(doc["root"])]
walk(doc["root"], [root["name"]])
sys.stdout.write("".join(line + "\n" for line in sorted(out)))
if leaks:
    sys.stderr.write("public-api: hidden items outside `__private` (machinery must be reachable only there):\n")
    sys.stderr.write("".join("  " + line + "\n" for line in sorted(leaks)))
    sys.exit(1)

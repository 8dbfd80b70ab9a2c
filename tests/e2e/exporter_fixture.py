#!/usr/bin/env python3
"""Reduces a real scrape of an exporter to what obs-gen checks queries against: each family's
HELP and TYPE and one sample per set of label names (values kept as scraped).

    curl -s 127.0.0.1:9100/metrics | python3 tests/e2e/exporter_fixture.py "prometheus-node-exporter 1.5.0" \
        > deploy/prometheus/exporters/node.prom

tests/e2e/infra.sh scrapes the exporters it starts and fails when a metric of the committed fixture
that the generated dashboards or rules use is missing from the live scrape (renamed in a newer
exporter); families a machine may lack (hardware sensors, other disks) and nothing uses are not
required:

    curl -s 127.0.0.1:9100/metrics | python3 tests/e2e/exporter_fixture.py --check FIXTURE FILES...
"""
import re
import sys

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"')


def label_names(body):
    return tuple(sorted(LABEL.findall(body or "")))


def families(lines):
    """(sample name, label names) of every sample line."""
    for line in lines:
        m = SAMPLE.match(line)
        if m:
            yield m.group(1), label_names(m.group(3))


def reduce(source, lines):
    out = [f"# Taken from a real scrape of {source} by tests/e2e/exporter_fixture.py:",
           "# one sample per set of label names. obs-gen checks dashboards and alerts against these names."]
    seen = set()
    for line in lines:
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            out.append(line)
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        key = (m.group(1), label_names(m.group(3)))
        if key not in seen:
            seen.add(key)
            out.append(line)
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "--check":
        fixture = {name for name, _ in families(open(sys.argv[2]).read().splitlines())}
        text = "".join(open(f).read() for f in sys.argv[3:])
        used = {n for n in fixture if re.search(r"(?<![a-zA-Z0-9_:])" + re.escape(n) + r"(?![a-zA-Z0-9_:])", text)}
        live = {name for name, _ in families(sys.stdin.read().splitlines())}
        missing = sorted(used - live)
        if not used or missing:
            print(f"  {sys.argv[2]}: used {len(used)} names; not in the live scrape: {', '.join(missing[:20])}")
            sys.exit(1)
        print(f"  {sys.argv[2]}: the {len(used)} names the dashboards and rules use are all in the live scrape")
        return
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.stdout.write(reduce(sys.argv[1], sys.stdin.read().splitlines()))


main()

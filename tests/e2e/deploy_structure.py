"""The deploy/ files, checked by structure: no Docker, Loki, Tempo, Grafana or Alloy binary is
available here, so what can be read is read (YAML parsed, paths resolved, values compared) and
the one piece of wiring that can run, Loki's derived field on trace_id, runs against real log
lines of the service.

Usage: python3 tests/e2e/deploy_structure.py [revel.log]
"""

import json
import os
import re
import sys

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DEPLOY = os.path.join(ROOT, "deploy")
problems = []


def need(ok, what):
    if not ok:
        problems.append(what)


def load(path):
    with open(os.path.join(DEPLOY, path)) as f:
        return yaml.safe_load(f)


def mem(s):
    units = {"m": 1, "g": 1024}
    return int(float(s[:-1]) * units[s[-1].lower()])


compose = load("compose.yaml")
prod = load("compose.production.yaml")
services = compose["services"]

# The stack of the issue: Loki 3, Tempo 2, Prometheus, Grafana 11, Pyroscope, a collector.
images = {name: s.get("image", "") for name, s in services.items()}
for name, pattern in {
    "loki": r"grafana/loki:3\.",
    "tempo": r"grafana/tempo:2\.",
    "prometheus": r"prom/prometheus:v[23]\.",
    "alertmanager": r"prom/alertmanager:v0\.",
    "pyroscope": r"grafana/pyroscope:1\.",
    "grafana": r"grafana/grafana:11\.",
    "alloy": r"grafana/alloy:v1\.",
}.items():
    need(re.match(pattern, images.get(name, "")), f"service {name}: image {images.get(name)!r} is not {pattern}")

# Every long-running service restarts, has a health check and development limits.
for name, s in services.items():
    if "traffic" in s.get("profiles", []):
        continue
    need(s.get("restart") == "unless-stopped", f"{name}: restart policy")
    hc = s.get("healthcheck", {})
    need(hc.get("test") and hc.get("interval") and hc.get("retries"), f"{name}: health check")
    limits = s.get("deploy", {}).get("resources", {}).get("limits", {})
    need("cpus" in limits and "memory" in limits, f"{name}: development resource limits")

# The original design's limits: development, then production (limit, reservation).
DEV = {"loki": ("1g", 1.0), "tempo": ("1g", 1.0), "prometheus": ("2g", 2.0), "pyroscope": ("2g", 2.0), "grafana": ("512m", 0.5)}
PROD = {
    "loki": ("4g", "2g", 2.0),
    "tempo": ("4g", "2g", 2.0),
    "prometheus": ("8g", "4g", 4.0),
    "pyroscope": ("8g", "4g", 4.0),
    "grafana": ("2g", "1g", 1.0),
}
for name, (memory, cpus) in DEV.items():
    limits = services[name]["deploy"]["resources"]["limits"]
    need(mem(limits["memory"]) == mem(memory) and float(limits["cpus"]) == cpus, f"{name}: dev limits {limits}")
for name, (memory, reserved, cpus) in PROD.items():
    res = prod["services"][name]["deploy"]["resources"]
    need(
        mem(res["limits"]["memory"]) == mem(memory)
        and mem(res["reservations"]["memory"]) == mem(reserved)
        and float(res["limits"]["cpus"]) == cpus,
        f"{name}: production limits {res}",
    )

# Volumes: named ones are declared; bind mounts point at files that exist.
declared = set(compose.get("volumes", {}))
for name, s in services.items():
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("./"):
            need(os.path.exists(os.path.join(DEPLOY, src)), f"{name}: mounts {src}, which does not exist")
        elif not src.startswith("/"):
            need(src in declared, f"{name}: volume {src} is not declared")
for stateful in ["loki", "tempo", "prometheus", "pyroscope", "grafana"]:
    need(any(v.split(":")[0] in declared for v in services[stateful].get("volumes", [])), f"{stateful}: no data volume")

# Every scrape target is a service of the stack (Prometheus itself on localhost), the exporters
# the infrastructure dashboards read among them.
scrape = load("prometheus/prometheus.yml")
jobs = {c["job_name"]: c for c in scrape["scrape_configs"]}
for job in ["revel", "node", "postgres", "redis"]:
    need(job in jobs, f"prometheus.yml: no job {job}")
for job, c in jobs.items():
    for t in (t for sc in c.get("static_configs", []) for t in sc["targets"]):
        host = t.rsplit(":", 1)[0]
        need(host == "localhost" or host in services, f"prometheus.yml job {job}: target {t} is not a compose service")
for name in ["postgres", "redis"]:
    need(any(v.split(":")[0] in declared for v in services[name].get("volumes", [])), f"{name}: no data volume")
need("--maxmemory" in services["redis"]["command"], "redis: a maxmemory (RedisMemoryHigh compares with it)")

# 30-day retention everywhere.
need("--storage.tsdb.retention.time=30d" in services["prometheus"]["command"], "prometheus: 30-day retention flag")
loki = load("loki/loki.yaml")
need(loki["limits_config"]["retention_period"] == "720h", "loki: retention_period 720h")
need(loki["compactor"]["retention_enabled"] is True, "loki: the compactor applies retention")
tempo = load("tempo/tempo.yaml")
need(tempo["compactor"]["compaction"]["block_retention"] == "720h", "tempo: block_retention 720h")
pyro = load("pyroscope/pyroscope.yaml")
need(pyro["limits"]["compactor_blocks_retention_period"] == "30d", "pyroscope: 30-day retention")

# Signal paths: the service exports OTLP/HTTP to Alloy, Alloy to Tempo's OTLP/gRPC receiver and
# Loki's push API; Prometheus scrapes the service on the port it listens on.
revel_env = services["revel"]["environment"]
need(revel_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://alloy:4318", "revel: OTLP to alloy:4318")
port = revel_env["REVEL_ADDR"].rsplit(":", 1)[1]
with open(os.path.join(DEPLOY, "alloy/config.alloy")) as f:
    alloy = f.read()
need('endpoint = "0.0.0.0:4318"' in alloy, "alloy: OTLP/HTTP receiver on 4318")
need('endpoint = "tempo:4317"' in alloy and "4317:4317" not in str(services["tempo"].get("ports")), "alloy: exports to tempo:4317")
need(tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317"), "tempo: OTLP/gRPC receiver")
need('url = "http://loki:3100/loki/api/v1/push"' in alloy, "alloy: writes to loki")
labels = services["revel"]["labels"]
need(f'values = ["obs.logs={labels["obs.logs"]}"]' in alloy, "alloy: ships the logs of containers labelled like revel")
prom = load("prometheus/prometheus.yml")
revel_job = [j for j in prom["scrape_configs"] if j["job_name"] == "revel"]
need(revel_job and revel_job[0]["static_configs"][0]["targets"] == [f"revel:{port}"], "prometheus: scrapes revel where it listens")
need(prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"], "prometheus: sends alerts to alertmanager")
with open(os.path.join(DEPLOY, "..", "examples/revel/monitoring.toml")) as f:
    need(re.search(r'^job = "revel"$', f.read(), re.M), "monitoring.toml: the rules' job is the scrape job")

# Grafana: provisioning and dashboards mounted where the provider looks.
g = services["grafana"]
mounts = dict(v.split(":")[:2] for v in g["volumes"])
need(mounts.get("./grafana/provisioning") == "/etc/grafana/provisioning", "grafana: provisioning mount")
provider = load("grafana/provisioning/dashboards/dashboards.yaml")["providers"][0]
need(mounts.get("./grafana/dashboards") == provider["options"]["path"], "grafana: dashboards mounted where the provider reads")
need(g["environment"]["GF_USERS_ALLOW_SIGN_UP"] == "false", "grafana: sign-up off")
pg = prod["services"]["grafana"]["environment"]
need(pg.get("GF_AUTH_GOOGLE_ENABLED") == "true" and pg.get("GF_AUTH_ANONYMOUS_ENABLED") == "false", "grafana production: Google SSO, no anonymous access")
need(pg.get("GF_USERS_ALLOW_SIGN_UP") == "false" and pg.get("GF_AUTH_GOOGLE_ALLOW_SIGN_UP") == "false", "grafana production: no sign-up")

# Data sources and their correlations.
ds = {d["uid"]: d for d in load("grafana/provisioning/datasources/datasources.yaml")["datasources"]}
need(set(ds) == {"prometheus", "loki", "tempo", "pyroscope"}, f"datasources: {sorted(ds)}")
for uid, d in ds.items():
    host = d["url"].split("//")[1].split(":")[0]
    need(host in services, f"datasource {uid}: {d['url']} is not a compose service")
fields = ds["loki"]["jsonData"]["derivedFields"]
need(fields[0]["datasourceUid"] == "tempo", "loki: trace_id derived field opens Tempo")
t = ds["tempo"]["jsonData"]
need(t["tracesToLogsV2"]["datasourceUid"] == "loki", "tempo: traces to logs")
need(t["tracesToMetrics"]["datasourceUid"] == "prometheus", "tempo: traces to metrics")
need(t["tracesToProfiles"]["datasourceUid"] == "pyroscope", "tempo: traces to profiles")
need("trace_id" in t["tracesToLogsV2"]["query"], "tempo: traces-to-logs filters on trace_id")

# The derived field finds the trace id in real lines written by the service.
if len(sys.argv) > 1:
    regex = re.compile(fields[0]["matcherRegex"].replace("$$", "$"))
    found = 0
    with open(sys.argv[1]) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "trace_id" in record:
                m = regex.search(line)
                need(m and m.group(1) == record["trace_id"], f"derived field misses the trace id of {line[:120]}")
                found += 1
    need(found > 0, f"no log line with a trace_id in {sys.argv[1]}")

if problems:
    print("\n".join(problems))
    sys.exit(1)

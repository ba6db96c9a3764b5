"""deploy/: every file parses, the dashboard and alerts name only metrics dfwatch exports, the pieces fit together.

Docker is not available where these tests run, so images are not built here: the Dockerfiles are checked
statically and the entry point script is run for real (with the real `dfwatch` on PATH).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml

from pipeline.config import parse_config
from pipeline.metrics import STAGES, PrometheusObserver
from pipeline.shard import Shard
from tests._rtsp import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "dfwatch.json"
K8S = DEPLOY / "k8s"
METRIC = re.compile(r"\bdfwatch_[a-z0-9_]+")
# Labels Prometheus or the Operator add to every scraped series, and the histogram bucket label.
TARGET_LABELS = {"instance", "job", "pod", "namespace", "service", "endpoint", "container", "le"}


def _yaml_docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _k8s(path: Path, kind: str) -> dict:
    return next(d for d in _yaml_docs(path) if d["kind"] == kind)


# -- everything parses ----------------------------------------------------------------------------------------


def test_every_yaml_json_and_toml_file_under_deploy_parses():
    files = Counter()
    for path in sorted(DEPLOY.rglob("*")):
        if path.suffix in (".yaml", ".yml"):
            assert _yaml_docs(path), f"{path} is empty"
        elif path.suffix == ".json":
            assert isinstance(json.loads(path.read_text()), dict), path
        elif path.suffix == ".toml":
            tomllib.loads(path.read_text())
        else:
            continue
        files[path.suffix] += 1
    # compose, prometheus x2, grafana provisioning x2, k8s base x8, gpu overlay x2; the dashboard; 2 configs
    assert files[".yaml"] + files[".yml"] >= 15 and files[".json"] >= 1 and files[".toml"] >= 2, files


def _deploy_config(text: str, tmp_path: Path, *, where: str):
    """A deploy config as a worker loads it; its camera logins file (a mounted secret there) is a real one here."""
    raw = tomllib.loads(text)
    if raw.get("sources", {}).get("credentials"):
        cameras = tmp_path / "cameras.netrc"
        cameras.write_text("machine 192.0.2.10 login viewer password not-a-secret\n")
        cameras.chmod(0o440)
        raw["sources"]["credentials"] = str(cameras)
    return parse_config(raw, where=where)


@pytest.mark.parametrize("path", [DEPLOY / "config" / "streams.toml", DEPLOY / "streams.example.toml"])
def test_stream_configs_are_valid_dfwatch_configs(path, tmp_path):
    cfg = _deploy_config(path.read_text(), tmp_path, where=str(path))
    assert cfg.metrics.port == 9108


def test_the_configmap_holds_a_valid_dfwatch_config_that_serves_metrics_to_the_cluster(tmp_path):
    cm = _k8s(K8S / "base" / "configmap.yaml", "ConfigMap")
    cfg = _deploy_config(cm["data"]["streams.toml"], tmp_path, where="configmap")
    assert len(cfg.streams) >= 3 and cfg.metrics.host == "0.0.0.0"
    assert cfg.sinks.redis.startswith("redis://dfwatch@redis:")  # the workers' ACL user, not Redis' admin
    assert cfg.sources.credentials is not None and not any("@" in s.url for s in cfg.streams)
    assert cfg.shard is None  # each worker's shard comes from its pod name, not the shared file


# -- metric names: only what the code exports ------------------------------------------------------------------


def exported_series() -> tuple[set[str], dict[str, set[str]]]:
    """Every series name a live dfwatch Observer exposes on /metrics (scraped over HTTP), and each one's labels.

    A labelled metric shows only its HELP/TYPE lines until a label value is used, so the sample names follow
    the exposition format from each family's type: counter -> NAME_total (and _created), histogram ->
    NAME_bucket, NAME_sum, NAME_count (and _created), gauge -> NAME.
    """
    observer = PrometheusObserver()
    port = free_port()
    observer.serve("127.0.0.1", port)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        observer.close()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))
    names: set[str] = set()
    for name, kind in types.items():
        if not name.startswith("dfwatch_"):
            continue
        if kind == "counter":
            base = name.removesuffix("_total")
            names |= {f"{base}_total", f"{base}_created"}
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
        else:
            names.add(name)
    labels = {  # each metric object's name (counters without _total) and label names
        m._name: set(m._labelnames) | TARGET_LABELS for m in vars(observer).values() if hasattr(m, "_labelnames")
    }
    assert len(labels) == len(types) - sum(not n.startswith("dfwatch_") for n in types)
    return names, labels


@pytest.fixture(scope="module")
def exported():
    return exported_series()


def _exprs() -> dict[str, str]:
    """Every PromQL expression in the alert rules, the Operator rules and the dashboard, by where it is."""
    out = {
        f"alerts.yml {r['alert']}": r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
    }
    rule = _k8s(K8S / "base" / "prometheusrule.yaml", "PrometheusRule")
    out |= {f"prometheusrule {r['alert']}": r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            out[f"variable {var['name']}"] = var["query"]["query"]
    for ann in dash["annotations"]["list"]:
        out[f"annotation {ann['name']}"] = ann["expr"]
    return out


def unknown_names(text: str, exported: set[str]) -> set[str]:
    return set(METRIC.findall(text)) - exported


def test_the_live_registry_is_what_the_readme_lists(exported):
    names, _ = exported
    assert {"dfwatch_stage_seconds_bucket", "dfwatch_frames_dropped_total", "dfwatch_stream_up"} <= names
    assert "dfwatch_frames_dropped" not in names  # a counter is exposed with _total only
    # The README's "Prometheus metrics:" paragraph names every family the service exports, and nothing else.
    paragraph = (ROOT / "README.md").read_text().split("Prometheus metrics:", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"`(dfwatch_[a-z_]+)", paragraph))
    histograms = {n.removesuffix("_bucket") for n in names if n.endswith("_bucket")}
    families = {n for n in names if not n.endswith(("_bucket", "_sum", "_count", "_created"))} | histograms
    assert listed == families, f"README: not exported {sorted(listed - families)}, missing {sorted(families - listed)}"


def test_every_metric_in_the_dashboard_and_the_alert_rules_is_exported(exported):
    names, _ = exported
    exprs = _exprs()
    assert len(exprs) >= 30
    bad = {where: sorted(unknown_names(expr, names)) for where, expr in exprs.items() if unknown_names(expr, names)}
    assert not bad, f"metrics dfwatch does not export: {bad}"
    for path in (ALERTS, DASHBOARD, K8S / "base" / "prometheusrule.yaml"):  # descriptions and help texts too
        assert not unknown_names(path.read_text(), names), path
    used = {m for expr in exprs.values() for m in METRIC.findall(expr)}
    assert len(used) >= 12  # the dashboard covers most of what the service exports


def test_the_name_check_catches_what_it_should(exported):
    names, _ = exported
    assert unknown_names("rate(dfwatch_frames_dropped[5m])", names) == {"dfwatch_frames_dropped"}  # no _total
    assert unknown_names("dfwatch_stage_seconds > 1", names) == {"dfwatch_stage_seconds"}  # histogram, no suffix
    assert not unknown_names("histogram_quantile(0.95, rate(dfwatch_stage_seconds_bucket[5m]))", names)


def test_labels_used_in_queries_exist_on_their_metrics(exported):
    _, labels = exported
    for where, expr in _exprs().items():
        metrics = [m for m in METRIC.findall(expr)]
        base = {re.sub(r"_(bucket|sum|count|total|created)$", "", m) for m in metrics}
        allowed = set.union(*(labels[b] for b in base))
        grouped = {g.strip() for clause in re.findall(r"by \(([^)]*)\)", expr) for g in clause.split(",")}
        matched = set(re.findall(r"[{,]\s*([a-z_]+)\s*=~?", expr))
        assert grouped | matched <= allowed, f"{where}: labels {sorted((grouped | matched) - allowed)} not on {base}"
        for value in re.findall(r'stage=~?"([a-z|]+)"', expr):
            assert set(value.split("|")) <= set(STAGES), where


# -- the alert rules and the dashboard say what the issue asks ----------------------------------------------------


def test_alert_rules_cover_stream_down_fake_latency_and_drops():
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    assert rules["DfwatchStreamDown"]["expr"].replace(" ", "") == "dfwatch_stream_up==0"
    assert "dfwatch_alerts_total" in rules["DfwatchFakeVerdict"]["expr"]
    latency = rules["DfwatchLatencyHigh"]["expr"]
    assert "histogram_quantile(0.95" in latency and "dfwatch_capture_to_publish_seconds_bucket" in latency
    assert latency.rstrip().endswith("> 1")
    drops = rules["DfwatchDropsHigh"]["expr"]
    assert "dfwatch_frames_dropped_total" in drops and "dfwatch_frames_decoded_total" in drops
    assert drops.rstrip().endswith("> 0.05")
    assert all(
        r["labels"]["severity"] in {"warning", "critical"} and r["annotations"]["summary"] for r in rules.values()
    )


def test_the_operator_rules_are_the_alert_file():
    rule = _k8s(K8S / "base" / "prometheusrule.yaml", "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())


def test_dashboard_shows_verdicts_scores_stage_heatmaps_fps_drops_reconnects():
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}
    kinds = {p["title"]: p["type"] for p in panels}
    assert any("dfwatch_fake_score" in e and kinds[t] == "state-timeline" for t, e in exprs.items())
    assert any("dfwatch_alerts_total" in e for e in exprs.values())
    heatmaps = [p for p in panels if p["type"] == "heatmap"]
    stage = next(p for p in heatmaps if "dfwatch_stage_seconds_bucket" in p["targets"][0]["expr"])
    assert stage["repeat"] == "stage" and all(t["format"] == "heatmap" for p in heatmaps for t in p["targets"])
    assert any("dfwatch_capture_to_publish_seconds_bucket" in p["targets"][0]["expr"] for p in heatmaps)
    for metric in ("dfwatch_stream_fps", "dfwatch_frames_dropped_total", "dfwatch_reconnects_total"):
        assert any(metric in e for e in exprs.values()), metric
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)


# -- compose, prometheus and grafana fit together -----------------------------------------------------------------


def test_compose_wires_dfwatch_redis_prometheus_and_grafana(tmp_path):
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"dfwatch", "redis", "prometheus", "grafana"}
    build = services["dfwatch"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: mounts missing {source}"
    config_mount = next(v for v in services["dfwatch"]["volumes"] if v.startswith("./config/"))
    assert config_mount.split(":")[1] in services["dfwatch"]["command"]
    cfg = _deploy_config((DEPLOY / "config" / "streams.toml").read_text(), tmp_path, where="compose config")
    assert cfg.metrics.host == "0.0.0.0" and cfg.sinks.redis == "redis://dfwatch@redis:6379/0"  # the ACL user
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"dfwatch:{cfg.metrics.port}"]
    assert all((DEPLOY / "prometheus" / f).is_file() for f in prom["rule_files"])
    assert f"127.0.0.1:{cfg.metrics.port}:{cfg.metrics.port}" in services["dfwatch"]["ports"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dfwatch.yaml").read_text())["providers"][0]
    mounts = dict(v.split(":")[:2][::-1] for v in services["grafana"]["volumes"] if v.startswith("./"))
    assert (DEPLOY / mounts[provider["options"]["path"]] / "dfwatch.json").is_file()
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    dash = json.loads(DASHBOARD.read_text())
    current = next(v for v in dash["templating"]["list"] if v["name"] == "datasource")["current"]["value"]
    assert datasource["datasources"][0]["uid"] == current and datasource["datasources"][0]["url"].endswith(":9090")


# -- images -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_run_as_a_user_check_health_and_download_no_model(name):
    text = (DEPLOY / name).read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert "HEALTHCHECK" in text and "/metrics" in text.split("HEALTHCHECK", 1)[1]
    assert "COPY models/ /app/models/" in text and 'ENTRYPOINT ["dfwatch-entrypoint"]' in text
    assert not re.search(r"curl|wget|hf_hub|huggingface|\.pt\b|yolov8n\.pt|torch\.hub", "\n".join(instructions))
    for line in instructions:  # every path the image copies from the build context exists (models/ is built)
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                if not source.startswith("--") and source != "models/":
                    assert (ROOT / source).exists(), f"{name}: COPY {source} is not in the repository"
    ignore = (DEPLOY / f"{name}.dockerignore").read_text().splitlines()
    assert "*" in ignore
    assert {"!models/", "!deploy/entrypoint.sh", "!engines/", "!pipeline/", "!trainer/"} <= set(ignore)


def test_cpu_image_is_slim_python_and_gpu_image_takes_the_tensorrt_base_as_an_argument():
    cpu = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.1[1-9]-slim", cpu, flags=re.MULTILINE)
    assert "download.pytorch.org/whl/cpu" in cpu and "torch==2.14.1" in cpu
    gpu = (DEPLOY / "Dockerfile.gpu").read_text()
    assert re.search(r"^ARG BASE=nvcr\.io/nvidia/tensorrt:\S+$", gpu, flags=re.MULTILINE)
    assert re.search(r"^FROM \$\{BASE\}$", gpu, flags=re.MULTILINE) and "tensorrt" in gpu


# -- kubernetes ---------------------------------------------------------------------------------------------------


def _shards_env(container: dict) -> str:
    return next(e["value"] for e in container["env"] if e["name"] == "DFWATCH_SHARDS")


def test_statefulset_shards_by_ordinal_and_exposes_metrics_to_the_service_monitor():
    sts = _k8s(K8S / "base" / "statefulset.yaml", "StatefulSet")
    spec = sts["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert int(_shards_env(container)) == spec["replicas"] >= 2
    pod_name = next(e for e in container["env"] if e["name"] == "DFWATCH_POD_NAME")
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["args"][:1] == ["watch"] and "--control" in container["args"]
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    config = next(v for v in spec["template"]["spec"]["volumes"] if v["name"] == "config")
    cm = _k8s(K8S / "base" / "configmap.yaml", "ConfigMap")
    assert config["configMap"]["name"] == cm["metadata"]["name"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")["mountPath"]
    assert f"{mount}/streams.toml" in container["args"]
    port = container["ports"][0]
    svc = _k8s(K8S / "base" / "service.yaml", "Service")
    assert spec["serviceName"] == svc["metadata"]["name"] and svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"][0]["targetPort"] == port["name"] == "metrics" and port["containerPort"] == 9108
    labels = spec["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    monitor = _k8s(K8S / "base" / "servicemonitor.yaml", "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert all((K8S / "base" / r).is_file() for r in kustomization["resources"])


def test_gpu_overlay_requests_a_gpu_per_worker():
    patch = _k8s(K8S / "overlays" / "gpu" / "statefulset-gpu.yaml", "StatefulSet")
    container = patch["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(a.endswith(".engine") for a in container["args"])
    kustomization = yaml.safe_load((K8S / "overlays" / "gpu" / "kustomization.yaml").read_text())
    assert kustomization["images"][0]["newTag"] == "gpu"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its built-in kustomize) is not installed")
@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_kustomize_renders(overlay):
    proc = subprocess.run(["kubectl", "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = Counter(d["kind"] for d in docs)
    assert kinds["ConfigMap"] == kinds["ServiceMonitor"] == kinds["PrometheusRule"] == 1
    assert kinds["StatefulSet"] == kinds["NetworkPolicy"] == 2  # the workers and Redis
    sts = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "dfwatch")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert int(_shards_env(container)) == sts["spec"]["replicas"]
    assert all(d["metadata"].get("namespace") == "dfwatch" for d in docs if d["kind"] != "Namespace")
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "StatefulSet"]
    assert [p.get("automountServiceAccountToken") for p in pods] == [False, False]  # no API token in any pod
    if overlay.endswith("gpu"):
        assert container["image"] == "dfwatch:gpu" and container["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert {e["name"] for e in container["env"]} >= {"DFWATCH_SHARDS", "DFWATCH_POD_NAME", "DFWATCH_BUILD_ENGINES"}
    else:
        assert container["image"] == "dfwatch:cpu" and "nvidia.com/gpu" not in json.dumps(sts)


# -- security: passwords, persistence, memory, reachability (issue 15) ----------------------------------------------


def _redis_command(script: str, *, conf: Path, port: int, data: Path) -> list[str]:
    """The deploy file's redis-server start script, run here on a free port with its files under a temp folder."""
    script = script.replace("/tmp/auth.conf", str(conf)).replace("/run/redis/auth.conf", str(conf))
    script = script.replace("--dir /data", "")
    return ["sh", "-c", f"{script} --port {port} --bind 127.0.0.1 --dir {data}"]


def _compose_redis_script() -> str:
    command = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["redis"]["command"]
    assert command[:2] == ["sh", "-c"]
    return command[2].replace("$$", "$")  # compose's escape for a literal $


def _k8s_redis_script() -> str:
    container = _k8s(K8S / "base" / "redis.yaml", "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c"]
    return container["args"][0]


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_the_deployed_redis_demands_its_password_keeps_it_off_ps_persists_and_bounds_memory(where, tmp_path):
    """The compose and Kubernetes Redis ran without a password or persistence, with no maxmemory: run the deploy
    file's own start script with a real redis-server and look at what it does."""
    import redis as redis_py

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    script = _compose_redis_script() if where == "compose" else _k8s_redis_script()
    password, port = "pw-Deploy-7f3a", free_port()
    env = os.environ | {"REDIS_PASSWORD": password, "REDIS_WORKER_PASSWORD": "pw-Worker-2c9e"}
    proc = subprocess.Popen(
        _redis_command(script, conf=tmp_path / "auth.conf", port=port, data=tmp_path),
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis_py.Redis(port=port, password=password, socket_timeout=5)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis_py.ConnectionError:
                time.sleep(0.05)
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(port=port, socket_timeout=5).ping()
        config = {k: v for k, v in client.config_get("*").items()}
        assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
        assert int(config["maxmemory"]) == 512 * 1024 * 1024 and config["maxmemory-policy"] == "volatile-lru"
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()  # exec: the shell became redis-server
        assert b"redis-server" in cmdline and password.encode() not in cmdline and b"pw-Worker" not in cmdline
        assert oct((tmp_path / "auth.conf").stat().st_mode & 0o777) == "0o600"
    finally:
        proc.kill()
        proc.wait()


def test_compose_requires_every_password_and_grafana_is_not_anonymous():
    text = (DEPLOY / "compose.yaml").read_text()
    services = yaml.safe_load(text)["services"]
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")  # no default: refuse
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and "GF_AUTH_ANONYMOUS_ORG_ROLE" not in grafana
    # The worker holds only its ACL user's password; Redis gets both, each required.
    assert services["dfwatch"]["environment"]["DFWATCH_REDIS_PASSWORD"].startswith("${REDIS_WORKER_PASSWORD:?")
    assert services["redis"]["environment"]["REDIS_WORKER_PASSWORD"].startswith("${REDIS_WORKER_PASSWORD:?")
    assert "${REDIS_PASSWORD" not in json.dumps(services["dfwatch"])  # never the admin's
    assert ":-" not in text.split("environment", 1)[1]  # no ${VAR:-default} left for a secret
    assert "change-me" not in text


def test_kubernetes_redis_is_reachable_only_from_workers_and_workers_not_inside_the_cluster():
    policies = {d["metadata"]["name"]: d for d in _yaml_docs(K8S / "base" / "networkpolicy.yaml")}
    redis_sts = _k8s(K8S / "base" / "redis.yaml", "StatefulSet")
    workers = _k8s(K8S / "base" / "statefulset.yaml", "StatefulSet")
    worker_labels = workers["spec"]["template"]["metadata"]["labels"]
    redis_labels = redis_sts["spec"]["template"]["metadata"]["labels"]
    redis_policy = policies["redis"]["spec"]
    assert redis_policy["podSelector"]["matchLabels"].items() <= redis_labels.items()
    [rule] = redis_policy["ingress"]
    assert [p["podSelector"]["matchLabels"] for p in rule["from"]] == [
        {k: worker_labels[k] for k in rule["from"][0]["podSelector"]["matchLabels"]}
    ]
    assert set(redis_policy["policyTypes"]) == {"Ingress", "Egress"} and redis_policy["egress"] == []
    worker_policy = policies["dfwatch-worker"]["spec"]
    assert worker_policy["podSelector"]["matchLabels"].items() <= worker_labels.items()
    [open_internet] = [
        r for r in worker_policy["egress"] if any(t.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for t in r["to"])
    ]
    excluded = set(open_internet["to"][0]["ipBlock"]["except"])
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= excluded
    assert [p["port"] for p in worker_policy["ingress"][0]["ports"]] == [9108]
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "networkpolicy.yaml" in kustomization["resources"]
    assert redis_sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"  # persistence on a volume
    container = workers["spec"]["template"]["spec"]["containers"][0]
    secret = next(e for e in container["env"] if e["name"] == "DFWATCH_REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]
    assert secret["name"] == "dfwatch-redis" and not secret.get("optional", False)  # no password-less fallback
    assert secret["key"] == "worker-password"  # the ACL user's; the admin password stays with Redis


def test_liveness_checks_the_stage_loop_not_only_the_metrics_thread(tmp_path):
    container = _k8s(K8S / "base" / "statefulset.yaml", "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["exec"]["command"][:2] == ["dfwatch", "health"]
    for name in ("Dockerfile", "Dockerfile.gpu"):
        assert "CMD dfwatch health --url" in (DEPLOY / name).read_text()
    cm = _k8s(K8S / "base" / "configmap.yaml", "ConfigMap")
    cfg = _deploy_config(cm["data"]["streams.toml"], tmp_path, where="configmap")
    assert cfg.sources.allow_dirs == () and cfg.sinks.redis_ttl > 0


# -- least privilege: the workers' Redis ACL user, no API token, camera logins in a secret (issue 23) -----------------


def test_no_pod_gets_an_api_token_and_workers_read_camera_logins_from_a_secret_where_their_config_looks():
    for path in (K8S / "base" / "statefulset.yaml", K8S / "base" / "redis.yaml"):
        pod = _k8s(path, "StatefulSet")["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, path  # a hostile stream finds no Kubernetes token
    workers = _k8s(K8S / "base" / "statefulset.yaml", "StatefulSet")["spec"]["template"]["spec"]
    [volume] = [v for v in workers["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "dfwatch-cameras" and not volume["secret"].get("optional", False)
    assert volume["secret"]["defaultMode"] & 0o007 == 0  # dfwatch refuses a logins file everyone may read
    assert workers["securityContext"]["fsGroup"] == workers["securityContext"]["runAsGroup"]  # ... and reads it
    mount = next(m for m in workers["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    cm = tomllib.loads(_k8s(K8S / "base" / "configmap.yaml", "ConfigMap")["data"]["streams.toml"])
    assert cm["sources"]["credentials"] == f"{mount['mountPath']}/netrc" and mount["readOnly"] is True
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    [secret] = compose["services"]["dfwatch"]["secrets"]
    config = tomllib.loads((DEPLOY / "config" / "streams.toml").read_text())
    assert config["sources"]["credentials"] == secret["target"]
    assert compose["secrets"][secret["source"]]["file"].startswith("${DFWATCH_CAMERAS:?")  # no default file
    for text in ((DEPLOY / "README.md").read_text(), (ROOT / "README.md").read_text()):
        assert not re.search(r"redis-cli[^\n]*HSET[^\n]*://[^\s/@]+:[^\s/@]+@", text)  # no password in an argv


def _start_deploy_redis(where: str, tmp_path: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    import redis as redis_py

    script = _compose_redis_script() if where == "compose" else _k8s_redis_script()
    proc = subprocess.Popen(
        _redis_command(script, conf=tmp_path / "auth.conf", port=port, data=tmp_path),
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
    )
    client = redis_py.Redis(port=port, password=env["REDIS_PASSWORD"], socket_timeout=5)
    for _ in range(200):
        try:
            client.ping()
            return proc
        except redis_py.ConnectionError:
            assert proc.poll() is None, f"redis-server exited {proc.returncode}"
            time.sleep(0.05)
    raise AssertionError("redis-server did not answer in 10 s")


def _wait(condition, seconds: float, what: str) -> None:  # noqa: ANN001 - a callable returning a truth value
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds:g} s"
        time.sleep(0.2)


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_a_worker_logs_in_as_the_acl_user_runs_a_full_control_round_and_can_do_nothing_else(
    where, model_dir, demo_clip, tmp_path
):
    """Every worker logged in as Redis' default user, which may run every command (CONFIG, FLUSHALL, EVAL, ...); a
    camera's password went into redis-cli's argv and the AOF. Start the deploy file's redis-server; as its ACL user
    a real worker takes a camera from the control hash (an HLS feed behind Basic authentication, its entry
    without a login: the login comes from the credentials file), publishes verdicts, writes the hash back after a
    FLUSHALL, and `dfwatch status` reads the table; the same user is refused everything else."""
    import redis as redis_py

    from tests._media import hls_playlist, http_server

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    admin_pw, worker_pw, camera_pw = "pw-Admin-5d1c", "pw-Worker-8b2e", "Cam-Zq7@pw"
    port, data = free_port(), tmp_path / "redis"
    data.mkdir()
    proc = _start_deploy_redis(where, data, port, {"REDIS_PASSWORD": admin_pw, "REDIS_WORKER_PASSWORD": worker_pw})
    admin = redis_py.Redis(port=port, password=admin_pw, socket_timeout=5, decode_responses=True)
    worker_url = f"redis://dfwatch@127.0.0.1:{port}/0"
    env = os.environ | {"DFWATCH_REDIS_PASSWORD": worker_pw, "OMP_NUM_THREADS": "2"}
    www = tmp_path / "www"
    www.mkdir()
    hls_playlist(demo_clip.path, www)
    cameras = tmp_path / "cameras.netrc"
    cameras.write_text(f'machine 127.0.0.1 login admin password "{camera_pw}"\n')
    cameras.chmod(0o600)
    config = tmp_path / "worker.toml"
    config.write_text(f'[sinks]\nredis = "{worker_url}"\n\n[sources]\ncredentials = "{cameras}"\n')
    log = tmp_path / "worker.log"
    watcher = None
    try:
        with http_server(www, basic=f"admin:{camera_pw}") as base, log.open("w") as err:
            url = f"{base}/index.m3u8"
            admin.hset("dfwatch:control:streams", "lobby", url)  # the operator's redis-cli: no password in it
            watcher = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pipeline.cli",
                    "watch",
                    "--config",
                    str(config),
                    "--control",
                    "--models",
                    str(model_dir),
                    "--metrics-port",
                    "0",
                    "--det-conf",
                    "0.001",
                    "--max-faces",
                    "1",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            verdicts = lambda: admin.xlen("dfwatch:verdicts:lobby")  # noqa: E731
            _wait(lambda: verdicts() >= 5 or watcher.poll() is not None, 120, "verdicts in Redis")
            assert watcher.poll() is None, log.read_text()
            assert admin.hget("dfwatch:state:lobby", "verdict") and admin.smembers("dfwatch:streams") == {"lobby"}
            admin.flushall()  # Redis loses its data: the worker writes its entry back (HSETNX, SET NX, GET)
            _wait(lambda: admin.hget("dfwatch:control:streams", "lobby") == url, 30, "the entry written back")
            _wait(lambda: verdicts() >= 1, 60, "verdicts after the data loss")
            status = subprocess.run(
                [sys.executable, "-m", "pipeline.cli", "status", "--redis", worker_url, "--once"],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            assert status.returncode == 0 and "lobby" in status.stdout, status.stderr
            watcher.send_signal(signal.SIGTERM)
            assert watcher.wait(60) == 0, log.read_text()
        stderr = log.read_text()
        assert "NOPERM" not in stderr and "no permissions" not in stderr, stderr
        assert camera_pw not in stderr and worker_pw not in stderr and "Zq7" not in status.stdout + status.stderr
        appendonly = b"".join(f.read_bytes() for f in data.rglob("*.aof"))
        assert url.encode() in appendonly  # the AOF holds the entry as written: no password in it, nor anywhere
        assert not any(b"Zq7" in f.read_bytes() for f in data.rglob("*") if f.is_file())
        worker = redis_py.Redis(port=port, username="dfwatch", password=worker_pw, socket_timeout=5)
        refused = {
            "CONFIG GET": lambda: worker.config_get("*"),
            "FLUSHALL": worker.flushall,
            "KEYS": lambda: worker.keys("*"),
            "EVAL": lambda: worker.eval("return 1", 0),
            "GET another key": lambda: worker.get("session:1"),
            "SET another key": lambda: worker.set("dfwatchx", 1),
            "HSET the control hash": lambda: worker.hset("dfwatch:control:streams", "x", "rtsp://192.0.2.1/s"),
            "DEL the control hash": lambda: worker.delete("dfwatch:control:streams"),
            "PUBLISH another channel": lambda: worker.publish("other", "x"),
            "ACL SETUSER": lambda: worker.acl_setuser("dfwatch", enabled=True, commands=["+@all"]),
            "SHUTDOWN": lambda: worker.execute_command("SHUTDOWN"),
        }
        for what, call in refused.items():
            with pytest.raises(redis_py.exceptions.NoPermissionError):
                call()
                pytest.fail(f"the worker's ACL user may {what}")
        assert worker.hsetnx("dfwatch:control:streams", "x", "y") == 1  # what the write-back needs, and no more
        assert admin.ping()  # still up, its data still there
    finally:
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        proc.kill()
        proc.wait()


# -- the entry point: pod ordinal -> --shard, run for real -----------------------------------------------------------


def _entrypoint(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the real dfwatch of this venv
    base = {k: v for k, v in os.environ.items() if not k.startswith("DFWATCH_")}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=base | {"PATH": path, "OMP_NUM_THREADS": "2"} | env,
    )


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory):
    from pipeline.demo import make_demo_clip

    return make_demo_clip(tmp_path_factory.mktemp("entrypoint") / "tiny.mp4", real_seconds=0.2, fake_seconds=0.2)


def test_entrypoint_runs_the_pods_shard_of_the_configured_streams(model_dir, tiny_clip, tmp_path):
    names = [f"cam{i}" for i in range(6)]
    owned = Shard(1, 3).select(names)
    assert 0 < len(owned) < len(names)
    config = tmp_path / "streams.toml"
    config.write_text("".join(f'[[streams]]\nid = "{n}"\nurl = "{tiny_clip.path}"\n\n' for n in names))
    proc = _entrypoint(
        "watch",
        "--config",
        str(config),
        "--models",
        str(model_dir),
        "--metrics-port",
        "0",
        "--det-conf",
        "0.001",
        "--max-faces",
        "1",
        env={"DFWATCH_SHARDS": "3", "DFWATCH_POD_NAME": "dfwatch-1"},
    )
    assert proc.returncode == 0, proc.stderr
    streams = Counter(json.loads(line)["stream"] for line in proc.stdout.splitlines())
    assert streams == {n: tiny_clip.n_frames for n in owned}
    assert f"shard 1/3: this worker owns {len(owned)} of 6 configured streams" in proc.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DFWATCH_SHARDS": "3", "DFWATCH_POD_NAME": "dfwatch"}, "pod name 'dfwatch' does not end in -<ordinal>"),
        ({"DFWATCH_SHARDS": "3", "DFWATCH_POD_NAME": "dfwatch-x"}, "set DFWATCH_SHARD_INDEX=0..2"),
        ({"DFWATCH_SHARDS": "three", "DFWATCH_POD_NAME": "dfwatch-0"}, "DFWATCH_SHARDS='three' is not a number"),
        ({"DFWATCH_SHARDS": "3", "DFWATCH_POD_NAME": "dfwatch-3"}, "shard 3/3 is out of range"),  # dfwatch's check
        ({"DFWATCH_SHARDS": "0", "DFWATCH_POD_NAME": "dfwatch-0"}, "shard 0/0 is out of range"),
    ],
)
def test_entrypoint_refuses_what_gives_no_shard(env, message):
    proc = _entrypoint("watch", env=env)
    assert proc.returncode == 2 and message in proc.stderr and proc.stdout == ""


def test_entrypoint_takes_an_explicit_index_and_passes_other_commands_through(tmp_path):
    name = next(f"cam{i}" for i in range(100) if not Shard(2, 4).owns(f"cam{i}"))
    env = {"DFWATCH_SHARDS": "4", "DFWATCH_SHARD_INDEX": "2", "HOSTNAME": "not-a-pod"}
    proc = _entrypoint("watch", f"{name}={tmp_path / 'never-opened.mp4'}", "--metrics-port", "0", env=env)
    assert proc.returncode == 0 and proc.stdout == ""
    assert "shard 2/4: this worker owns 0 of 1 configured streams" in proc.stderr and "nothing to watch" in proc.stderr
    proc = _entrypoint("--help", env={"DFWATCH_SHARDS": "3"})
    assert proc.returncode == 0 and proc.stdout.startswith("usage: dfwatch")


def test_a_stream_removed_at_run_time_leaves_no_gauge_that_keeps_an_alert_firing(model_dir, tiny_clip):
    import threading
    import time

    from engines import Classifier, Detector
    from pipeline.processor import BatchProcessor
    from pipeline.runner import Runner
    from pipeline.sources import SourceSpec

    obs = PrometheusObserver()
    processor = BatchProcessor(
        Detector(model_dir / "face_detector.onnx"), Classifier(model_dir / "deepfake_classifier.onnx"), obs
    )
    runner = Runner(
        [SourceSpec("gone", str(tiny_clip.path), loop=True, pace=True)], processor, [], obs, until_stopped=True
    )
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while obs.registry.get_sample_value("dfwatch_verdict", {"stream": "gone", "state": "UNKNOWN"}) is None:
            assert time.monotonic() < deadline, "no verdict within 60 s"
            time.sleep(0.05)
        runner.remove_stream("gone")
        while "gone" in runner.stream_ids:
            assert time.monotonic() < deadline, "the removed stream was not reaped within 60 s"
            time.sleep(0.05)
    finally:
        runner.stop.set()
        thread.join(30)
    for name in ("dfwatch_stream_up", "dfwatch_verdict", "dfwatch_fake_score", "dfwatch_queue_depth"):
        series = [s.labels for m in obs.registry.collect() if m.name == name for s in m.samples]
        assert not any(labels.get("stream") == "gone" for labels in series), name

"""deploy/: the dashboard and alert rules query only metrics the servers really expose."""

from __future__ import annotations

import json
import re
import urllib.request

import yaml

from tests.harness import REPO

DEPLOY = REPO / "deploy"
METRIC = re.compile(r"\bqarr_[a-z_]+")


def exposed_names(port: int) -> set[str]:
    """Names on /metrics, from samples and from HELP/TYPE lines (a labelled counter with no series yet has only those)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return set(METRIC.findall(text))


def referenced(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


async def test_dashboard_and_alerts_query_metrics_that_exist(mesh):
    """Every qarr_ series in the Grafana dashboard and the alert rules is scraped from a running router or tier."""
    await mesh.generate(tier="a")
    names = exposed_names(mesh.router.metrics.port) | exposed_names(mesh.tiers["a"].metrics.port)

    dashboard = json.loads((DEPLOY / "grafana/qarr-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    rules = yaml.safe_load((DEPLOY / "qarr-alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]

    used = referenced(exprs)
    assert len(used) >= 12
    missing = sorted(used - names)
    assert not missing, f"queried but never exposed: {missing}"
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for panel in ("route mix", "latency", "budget", "kv-cache", "queue depth", "breaker", "cost per request"):
        assert panel in titles, panel


def test_prometheus_config_loads_the_alert_rules_and_scrapes_router_and_tiers():
    """The scrape config names a router job, a tier job and the rules file that exists beside it."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert {"qarr-router", "qarr-tier"} <= set(jobs)
    for rule_file in config["rule_files"]:
        assert (DEPLOY / rule_file).is_file()

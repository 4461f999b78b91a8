"""The chart's retrain CronJobs (templates/retrain-cronjob.yaml): rendered by the real helm, valid
against the Kubernetes schemas (strict, as `kubectl apply --validate=strict`), and running a command
the real `insurance` parser accepts, with the routing and credentials where retrain reads them."""

from __future__ import annotations

import json

import pytest

from lifecycle.cli import build_parser
from lifecycle.rollout import routes

from ..k8s.kube import by_kind, helm_template, helm_template_error
from ..k8s.test_schemas import validate_core

ON = ("retrain.enabled=true", "retrain.database.existingSecret=training-db")


def _retrain(objs):
    return [o for o in objs if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "retrain"]


def test_off_by_default():
    assert _retrain(helm_template()) == []


def test_one_valid_cronjob_per_enabled_vertical():
    objs = helm_template(sets=(*ON, "retrain.database.timeColumn=quoted_at",
                               "retrain.database.tables.auto=crm.auto_leads",
                               "verticals.life.enabled=false"))
    mine = _retrain(objs)
    jobs = by_kind(mine, "CronJob")
    assert sorted(j["metadata"]["labels"]["serving.kserve.io/inferenceservice"] for j in jobs) == \
        ["auto", "claims", "health", "home"]
    failures = [f"{o['kind']}/{o['metadata']['name']}: {e}" for o in mine for e in validate_core(o)]
    assert not failures, "\n".join(failures)
    auto = next(j for j in jobs if j["metadata"]["name"].endswith("-retrain-auto"))
    pod = auto["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    args = build_parser().parse_args(c["args"])  # the command the job runs is one `insurance` accepts
    assert args.func.__module__ == "lifecycle.retrain" and args.vertical == "auto"
    assert args.table == "crm.auto_leads" and args.time_column == "quoted_at" and args.since == "180d"
    assert args.repository == "/mnt/models" and args.rollout == "none" and args.max_age == "30d"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert not mounts["models"].get("readOnly") and mounts["database"]["readOnly"]
    assert args.data_url_file.startswith(mounts["database"]["mountPath"] + "/")
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["models"]["persistentVolumeClaim"]["claimName"] == "insurance-models"
    assert vols["database"]["secret"]["secretName"] == "training-db"
    assert all("secretKeyRef" not in json.dumps(e) for e in c.get("env", []))  # the URL is a file, not env
    assert auto["spec"]["concurrencyPolicy"] == "Forbid" and pod["restartPolicy"] == "Never"
    cm = next(o for o in mine if o["kind"] == "ConfigMap")
    assert str(args.values).endswith("/values.json") and vols["routes"]["configMap"]["name"] == cm["metadata"]["name"]
    values = json.loads(cm["data"]["values.json"])
    assert routes(values)["auto"].stable == "1.0.0" and not routes(values)["life"].enabled


def test_query_and_vertical_selection():
    objs = helm_template(sets=(*ON, "retrain.verticals={claims}",
                               "retrain.database.queries.claims=SELECT * FROM claims WHERE closed ORDER BY id"))
    jobs = by_kind(_retrain(objs), "CronJob")
    assert len(jobs) == 1
    container = jobs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    assert args.query == "SELECT * FROM claims WHERE closed ORDER BY id" and args.table is None


@pytest.mark.parametrize("sets, words", [
    (("retrain.enabled=true",), "retrain.database.existingSecret"),
    ((*ON, "retrain.triggers.psiWindow=6 hours"), "psiWindow"),
    ((*ON, "retrain.verticals={motorbike}"), "verticals"),
    ((*ON, "verticals.home.enabled=false", "retrain.verticals={home}"), "home is not an enabled vertical"),
])
def test_bad_values_fail_with_the_key(sets, words):
    assert words in helm_template_error(sets=sets)

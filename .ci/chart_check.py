#!/usr/bin/env python3
"""The Helm chart's check: lint, render value sets, validate every manifest against the
Kubernetes API schemas, refuse what the chart must refuse, and feed the configuration each
rendered container would get to the binaries' own `check-config`, then check that the pieces
agree (addresses, ports, token, database, writable paths).

usage: chart_check.py HELM KUBERNETES_VALIDATE BIN_DIR OUT_DIR
"""

import base64
import json
import os
import subprocess
import sys
from urllib.parse import urlparse

import yaml

CHART = "helm/backtrack"
FIXTURES = os.path.abspath("storage-node/tests/fixtures")
RELEASE = "bt"
NAMESPACE = "databases"
KUBERNETES = ["1.30.0", "1.37.0"]
VALUE_SETS = {
    "default": None,
    "sqlite": f"{CHART}/ci/sqlite-values.yaml",
    "external-postgresql": f"{CHART}/ci/external-postgresql-values.yaml",
    "external-url": f"{CHART}/ci/external-url-values.yaml",
}
# Secrets the operator creates beside the release (the external-postgresql value set).
EXTERNAL_SECRETS = {
    ("backtrack-database", "url"): "postgres://backtrack:pw@pg.databases.svc:5432/backtrack",
    ("backtrack-node-token", "token"): "a-token-from-the-operators-secret",
    ("backtrack-keys", "keys"): "AKIDOPERATOR1:secret-one,AKIDOPERATOR2:secret-two",
}
# Value sets the chart must refuse, with a phrase its message must contain.
REFUSALS = [
    (["--set", "database.type=sqlite"], "set controlPlane.replicas=1"),
    (["--set", "database.url=postgres://u:p@h/db"], "needs exactly one of"),
    (["--set", "postgresql.enabled=false"], "needs exactly one of"),
    (["--set", "database.type=sqlite", "--set", "controlPlane.replicas=1",
      "--set", "database.url=postgres://u:p@h/db"], "does not use database.url"),
    (["--set", "postgresql.enabled=false", "--set", "database.url=mysql://h/db"],
     "must start with postgres://"),
    (["--set", "controlPlane.replica=3"], "additional properties 'replica' not allowed"),
    (["--set", "storageNode.replicas=0"], "minimum"),
    (["--set", "database.type=mysql"], "database/type"),
    (["--set", "auth.accessKeyId=AKIDX"], "together"),
    (["--set", "auth.accessKeyId=AKIDX", "--set", "auth.secretAccessKey=s",
      "--set", "auth.existingSecret=keys"], "not both"),
    (["--set", "auth.metricsAuth=true", "--set", "metrics.serviceMonitor.enabled=true"],
     "ServiceMonitor"),
]

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print(f"  FAIL {what}")
    return condition


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def main():
    helm, validator, bin_dir, out = sys.argv[1:5]
    os.makedirs(out, exist_ok=True)
    print("helm lint --strict, with each value set")
    for name, values in VALUE_SETS.items():
        r = run([helm, "lint", "--strict", CHART] + (["-f", values] if values else []))
        check(r.returncode == 0 and "[WARNING]" not in r.stdout and "[ERROR]" not in r.stdout,
              f"helm lint --strict ({name}): {r.stdout}{r.stderr}")
    for name, values in VALUE_SETS.items():
        print(f"value set {name}")
        r = run([helm, "template", RELEASE, CHART, "--namespace", NAMESPACE]
                + (["-f", values] if values else []))
        if not check(r.returncode == 0, f"helm template ({name}): {r.stderr}"):
            continue
        path = os.path.join(out, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(r.stdout)
        for version in KUBERNETES:
            v = run([validator, "--strict", "-k", version, path])
            problems = [line for line in (v.stdout + v.stderr).splitlines()
                        if " passed for resource " not in line]
            check(v.returncode == 0, f"kubernetes-validate --strict -k {version} ({name}):\n"
                  + "\n".join(problems))
        docs = [d for d in yaml.safe_load_all(r.stdout) if d]
        check_rendered(name, docs, bin_dir)
    print("refusals")
    for flags, phrase in REFUSALS:
        r = run([helm, "template", RELEASE, CHART] + flags)
        check(r.returncode != 0 and phrase in r.stderr,
              f"helm template {' '.join(flags)} should fail saying {phrase!r}; got "
              f"{r.returncode}: {r.stderr.strip()}")
    if failures:
        print(f"\n{len(failures)} chart check(s) failed")
        sys.exit(1)
    print("chart checks passed")


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def check_rendered(name, docs, bin_dir):
    config_maps = by_kind(docs, "ConfigMap")
    secrets = by_kind(docs, "Secret")
    services = by_kind(docs, "Service")
    workloads = {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}
    control_plane = pick(workloads, "control-plane")
    nodes = pick(workloads, "storage-node")
    if not (check(control_plane, f"{name}: a control-plane Deployment")
            and check(nodes, f"{name}: a storage-node StatefulSet")):
        return

    def secret_value(ref):
        key = (ref["name"], ref["key"])
        if ref["name"] in secrets:
            s = secrets[ref["name"]]
            if ref["key"] in s.get("stringData", {}):
                return s["stringData"][ref["key"]]
            if ref["key"] in s.get("data", {}):
                return base64.b64decode(s["data"][ref["key"]]).decode()
        check(key in EXTERNAL_SECRETS, f"{name}: secret {key} is neither rendered nor external")
        return EXTERNAL_SECRETS.get(key, "")

    def env_of(container):
        env, refs = {}, {}
        for source in container.get("envFrom", []):
            cm = source["configMapRef"]["name"]
            if check(cm in config_maps, f"{name}: envFrom ConfigMap {cm} is rendered"):
                env.update(config_maps[cm]["data"])
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif "secretKeyRef" in e["valueFrom"]:
                refs[e["name"]] = (e["valueFrom"]["secretKeyRef"]["name"],
                                   e["valueFrom"]["secretKeyRef"]["key"])
                env[e["name"]] = secret_value(e["valueFrom"]["secretKeyRef"])
            elif "configMapKeyRef" in e["valueFrom"]:
                ref = e["valueFrom"]["configMapKeyRef"]
                env[e["name"]] = config_maps[ref["name"]]["data"][ref["key"]]
        return env, refs

    def accepted(workload):
        """The container's configuration as its binary reads it (check-config's JSON)."""
        pod = workload["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env, refs = env_of(container)
        program = os.path.join(bin_dir, container["command"][0])
        tls = {k: env[k] for k in ("BACKTRACK_NODE_PG_TLS_CERT", "BACKTRACK_NODE_PG_TLS_KEY")
               if k in env}
        if tls:
            # The Secret's files, mounted where the node is told to read them; checked here
            # with the test certificate in their place.
            for var, path in tls.items():
                mount = mount_for(container, path)
                volume = volume_of(pod, container, path)
                check(mount is not None and volume is not None and "secret" in volume,
                      f"{name}: {var}={path} is in a mounted Secret")
            env["BACKTRACK_NODE_PG_TLS_CERT"] = FIXTURES + "/pg-test.crt"
            env["BACKTRACK_NODE_PG_TLS_KEY"] = FIXTURES + "/pg-test.key"
        args = ["check-config" if a == "serve" else a for a in container.get("args", [])]
        check(args[:1] == ["check-config"], f"{name}: {container['name']} runs `serve`")
        r = run([program] + args, env={"PATH": os.environ["PATH"], **env})
        if not check(r.returncode == 0, f"{name}: {container['command'][0]} refuses the "
                     f"rendered configuration: {r.stderr.strip()}"):
            return None, env, refs, pod, container
        return json.loads(r.stdout), env, refs, pod, container

    cp, cp_env, cp_refs, cp_pod, cp_container = accepted(control_plane)
    node, node_env, node_refs, node_pod, node_container = accepted(nodes)
    if cp is None or node is None:
        return
    print(f"  backtrack-service check-config: database {cp['database']['backend']}, "
          f"{len(cp['nodes'].get('external', []))} nodes; backtrack-storage-node check-config: "
          f"listen {node['listen']}, log budget {node['log_budget_bytes']} bytes, PostgreSQL on "
          f"{node['pg_listen']}{' with TLS' if node.get('pg_tls_cert') else ''}")

    # The API: the port the service listens on is the container's and the Service's target.
    cp_port = port_named(cp_container, "http")
    check(int(cp["listen"].rsplit(":", 1)[1]) == cp_port,
          f"{name}: control plane listens on {cp['listen']}, container port {cp_port}")
    api = [s for s in services.values() if component(s) == "control-plane"]
    check(len(api) == 1 and api[0]["spec"]["ports"][0]["targetPort"] == "http",
          f"{name}: one API Service targeting port http")
    probes = {p: cp_container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
    check(probes == {"livenessProbe": "/healthz", "readinessProbe": "/readyz"},
          f"{name}: control-plane probes {probes}")

    # The storage nodes: the control plane addresses every pod by its stable DNS name.
    headless = nodes["spec"]["serviceName"]
    check(services.get(headless, {}).get("spec", {}).get("clusterIP") == "None",
          f"{name}: the nodes' Service {headless} is headless")
    node_port = port_named(node_container, "http")
    check(int(node["listen"].rsplit(":", 1)[1]) == node_port,
          f"{name}: node listens on {node['listen']}, container port {node_port}")
    # PostgreSQL: every node serves it on one port, the container's and the headless Service's,
    # so a cluster's Endpoint (its node's DNS name) and Port reach it.
    pg_port = port_named(node_container, "postgresql")
    check(node["pg_listen"] == f"0.0.0.0:{pg_port}",
          f"{name}: node serves PostgreSQL on {node['pg_listen']}, container port {pg_port}")
    check(any(p["name"] == "postgresql" and p["port"] == pg_port and p["targetPort"] == "postgresql"
              for p in services.get(headless, {}).get("spec", {}).get("ports", [])),
          f"{name}: the nodes' Service publishes the PostgreSQL port {pg_port}")
    external = cp["nodes"].get("external", [])
    replicas = nodes["spec"]["replicas"]
    check(len(external) == replicas, f"{name}: {len(external)} node URLs for {replicas} nodes")
    for i, endpoint in enumerate(external):
        url = urlparse(endpoint["url"])
        want = f"{nodes['metadata']['name']}-{i}.{headless}.{NAMESPACE}.svc.cluster.local"
        check(endpoint["name"] == f"node-{i}" and url.hostname == want and url.port == node_port,
              f"{name}: node {i} is {endpoint}, expected node-{i} at {want}:{node_port}")
    # Authentication: the API runs with access keys, from the chart's Secret or the user's.
    check(len(cp.get("access_keys", [])) >= 1 and not cp.get("insecure_no_auth"),
          f"{name}: the control plane requires signed requests (access keys {cp.get('access_keys')})")
    check("BACKTRACK_ACCESS_KEYS" in cp_refs, f"{name}: the access keys come from a Secret")
    check(cp_refs.get("BACKTRACK_NODE_TOKEN") == node_refs.get("BACKTRACK_NODE_TOKEN")
          and cp_env["BACKTRACK_NODE_TOKEN"] == node_env["BACKTRACK_NODE_TOKEN"] != "",
          f"{name}: control plane and nodes share one token")

    # The metadata database.
    backend = cp["database"]["backend"]
    if backend == "sqlite":
        check(control_plane["spec"]["replicas"] == 1, f"{name}: SQLite with one replica")
        check(control_plane["spec"]["strategy"]["type"] == "Recreate",
              f"{name}: SQLite's Deployment recreates (one pod on the volume at a time)")
        claim = volume_of(cp_pod, cp_container, cp["data_dir"])
        check(claim and "persistentVolumeClaim" in claim,
              f"{name}: the SQLite file ({cp['data_dir']}) is on a PersistentVolumeClaim")
    else:
        url = urlparse(cp_env["BACKTRACK_DATABASE_URL"])
        pg = by_kind(docs, "StatefulSet")
        bundled = [s for s in pg.values() if component(s) == "postgresql"]
        if bundled:
            pg_env = {e["name"]: e.get("value") for e in
                      bundled[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
            check(url.hostname in services and url.port == 5432
                  and url.username == pg_env["POSTGRES_USER"]
                  and url.path == "/" + pg_env["POSTGRES_DB"],
                  f"{name}: the database URL points at the bundled PostgreSQL")
        check(url.scheme in ("postgres", "postgresql"), f"{name}: PostgreSQL URL")

    # Writable paths: the root filesystem is read-only, so data dirs must be mounted volumes.
    for pod, container, path in ((cp_pod, cp_container, cp["data_dir"]),
                                 (node_pod, node_container, node["data_dir"])):
        check(container["securityContext"].get("readOnlyRootFilesystem") is True,
              f"{name}: {container['name']} has a read-only root filesystem")
        check(volume_of(pod, container, path) is not None
              or claim_template_of(nodes, container, path),
              f"{name}: {container['name']}'s data dir {path} is a mounted volume")
        check(pod["securityContext"].get("runAsNonRoot") is True,
              f"{name}: {container['name']} runs as non-root")
    check(claim_template_of(nodes, node_container, node["data_dir"]),
          f"{name}: the node's data dir is on its volumeClaimTemplate")
    # Every mount (the chart's and extraVolumeMounts) names a volume of its pod.
    for workload in (control_plane, nodes):
        pod = workload["spec"]["template"]["spec"]
        names = {v["name"] for v in pod.get("volumes", [])} | {
            t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for container in pod.get("initContainers", []) + pod["containers"]:
            for mount in container.get("volumeMounts", []):
                check(mount["name"] in names,
                      f"{name}: {container['name']} mounts {mount['name']}, a volume its pod has")
    check(cp_pod["securityContext"]["runAsUser"] == dockerfile_uid(),
          f"{name}: runAsUser matches the Dockerfile's USER")

    # Everything that selects pods or Services finds them.
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in workloads.values()]
    for pdb in by_kind(docs, "PodDisruptionBudget").values():
        sel = pdb["spec"]["selector"]["matchLabels"]
        check(any(sel.items() <= p.items() for p in pods), f"{name}: PDB {pdb['metadata']['name']}"
              " selects pods")
    for svc in services.values():
        sel = svc["spec"]["selector"]
        check(any(sel.items() <= p.items() for p in pods), f"{name}: Service "
              f"{svc['metadata']['name']} selects pods")
    for ingress in by_kind(docs, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                check(p["backend"]["service"]["name"] in services,
                      f"{name}: Ingress backend {p['backend']['service']['name']} exists")
    for monitor in by_kind(docs, "ServiceMonitor").values():
        matched = [s for s in services.values()
                   if monitor["spec"]["selector"]["matchLabels"].items()
                   <= s["metadata"]["labels"].items()
                   and component(s) in monitor["spec"]["selector"]["matchExpressions"][0]["values"]]
        check(len(matched) == 2 and all(any(p["name"] == "http" for p in s["spec"]["ports"])
                                        for s in matched),
              f"{name}: the ServiceMonitor finds the API and node Services' http ports")


def pick(workloads, which):
    found = [w for w in workloads.values() if component(w) == which]
    return found[0] if len(found) == 1 else None


def component(obj):
    return obj["metadata"]["labels"].get("app.kubernetes.io/component")


def port_named(container, port_name):
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port_name)


def mount_for(container, path):
    mounts = [m for m in container.get("volumeMounts", [])
              if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    return max(mounts, key=lambda m: len(m["mountPath"]), default=None)


def volume_of(pod, container, path):
    mount = mount_for(container, path)
    if mount is None:
        return None
    return next((v for v in pod.get("volumes", []) if v["name"] == mount["name"]), None)


def claim_template_of(statefulset, container, path):
    mount = mount_for(container, path)
    return mount is not None and any(t["metadata"]["name"] == mount["name"]
                                     for t in statefulset["spec"].get("volumeClaimTemplates", []))


def dockerfile_uid():
    for line in open("Dockerfile"):
        if line.startswith("USER "):
            return int(line.split()[1].split(":")[0])
    return None


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks the Kubernetes manifests in deploy/kubernetes/ against the tenantd binary.

1. Every YAML document parses and has apiVersion, kind and metadata.name; Kubernetes
   objects validate (strictly: unknown fields are errors) against the API schemas of the
   oldest and newest Kubernetes versions checked (kubernetes-validate); kustomization.yaml
   lists exactly the other manifest files (and renders, if kubectl is installed).
2. Every environment variable a container gets (env, and the keys of ConfigMaps and Secrets
   it loads with envFrom), and every key of every ConfigMap and Secret, is one the binary
   accepts: the `[env: NAME]` markers of `tenantd serve --help` and `tenantd migrate --help`,
   for the subcommand the container runs. References to ConfigMap/Secret keys resolve.
3. Probes: liveness uses grpc service `liveness`, readiness grpc service "", a grpc
   startupProbe exists; probes target the port the server listens on.
4. Shutdown: terminationGracePeriodSeconds exceeds TENANTD_SHUTDOWN_PREDRAIN_MS +
   TENANTD_SHUTDOWN_GRACE_MS, and liveness cannot fail within that time.
5. Hardening of every tenantd container, and Service/PodDisruptionBudget selectors that
   match the Deployment's pods.

Usage: scripts/check-manifests.sh (installs PyYAML and kubernetes-validate from
scripts/requirements.txt into scripts/.venv, then runs this file), or directly with those
installed: python3 scripts/check-manifests.py [--dir deploy/kubernetes] [--bin PATH].
The binary is $TENANTD_BIN, default target/debug/tenantd. Exit status 1 on any failure.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import kubernetes_validate
    import yaml
except ImportError as error:
    sys.exit(f"check-manifests: {error}; run scripts/check-manifests.sh, or pip install -r scripts/requirements.txt")

ROOT = Path(__file__).resolve().parent.parent
SUBCOMMANDS = ("serve", "migrate")
# Read by the binary but not through clap, so absent from --help.
ACCEPTED_OUTSIDE_CLAP = {
    "RUST_LOG": "log filter, read by tracing-subscriber's EnvFilter (src/telemetry.rs)",
}
# Schemas to validate against: the first release with GA gRPC probes, and the newest known.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
ENV_MARKER = re.compile(r"\[env: ([A-Za-z_][A-Za-z0-9_]*)(?:=[^\]]*)?\]")
WORKLOAD_POD_SPEC = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
READINESS, LIVENESS = "", "liveness"
SERVE_DEFAULTS = {"TENANTD_LISTEN_ADDR": "0.0.0.0:50051", "TENANTD_SHUTDOWN_PREDRAIN_MS": "0", "TENANTD_SHUTDOWN_GRACE_MS": "20000"}


class Checker:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def ok(self, message: str) -> None:
        self.passed += 1
        print(f"ok    {message}")

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"FAIL  {message}")

    def expect(self, condition: bool, message: str, failure: str | None = None) -> bool:
        if condition:
            self.ok(message)
        else:
            self.fail(failure or message)
        return condition


def accepted_env(binary: Path, checker: Checker) -> dict[str, set[str]]:
    """Subcommand -> env var names from the `[env: NAME=...]` markers of its --help."""
    accepted = {}
    for subcommand in SUBCOMMANDS:
        try:
            result = subprocess.run(
                [str(binary), subcommand, "--help"], capture_output=True, text=True, timeout=30, env={"PATH": os.environ.get("PATH", "")}
            )
        except OSError as error:
            sys.exit(f"check-manifests: cannot run {binary}: {error} (build it, or set TENANTD_BIN)")
        names = set(ENV_MARKER.findall(result.stdout))
        if result.returncode != 0 or not names:
            sys.exit(f"check-manifests: `{binary} {subcommand} --help` failed or listed no [env: ...] markers:\n{result.stderr}")
        accepted[subcommand] = names
        checker.ok(f"`tenantd {subcommand} --help` accepts {len(names)} env vars: {', '.join(sorted(names))}")
    return accepted


def load_documents(directory: Path, checker: Checker) -> list[tuple[str, dict]]:
    documents = []
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))
    if not files:
        checker.fail(f"no YAML files in {directory}")
    for path in files:
        name = path.name
        try:
            loaded = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        except yaml.YAMLError as error:
            checker.fail(f"{name}: YAML parse error: {error}")
            continue
        if not loaded:
            checker.fail(f"{name}: no YAML document")
        for index, doc in enumerate(loaded):
            where = f"{name}[{index}]" if len(loaded) > 1 else name
            if not isinstance(doc, dict):
                checker.fail(f"{where}: document is not a mapping")
                continue
            missing = [field for field in ("apiVersion", "kind") if not isinstance(doc.get(field), str) or not doc[field]]
            metadata = doc.get("metadata")
            if doc.get("kind") != "Kustomization" and not (isinstance(metadata, dict) and isinstance(metadata.get("name"), str) and metadata["name"]):
                missing.append("metadata.name")
            if missing:
                checker.fail(f"{where}: missing {', '.join(missing)}")
                continue
            label = f"{where}: {doc['kind']}/{(metadata or {}).get('name', '-')}"
            checker.ok(f"{label} parses ({doc['apiVersion']})")
            documents.append((where, doc))
    return documents


def validate_schemas(documents: list[tuple[str, dict]], checker: Checker) -> None:
    for where, doc in documents:
        if doc["kind"] == "Kustomization":
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.path)
                checker.fail(f"{where}: invalid for Kubernetes {version} at {path or '(root)'}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError:
                checker.fail(f"{where}: no schema for {doc['apiVersion']} {doc['kind']} in Kubernetes {version}")
            else:
                continue
            break
        else:
            checker.ok(f"{where}: valid {doc['kind']} for Kubernetes {' and '.join(KUBERNETES_VERSIONS)} (strict)")


def check_kustomization(directory: Path, documents: list[tuple[str, dict]], checker: Checker) -> None:
    kustomizations = [doc for _, doc in documents if doc["kind"] == "Kustomization"]
    if not checker.expect(len(kustomizations) == 1, "one kustomization.yaml", "expected exactly one Kustomization"):
        return
    listed = set(kustomizations[0].get("resources") or [])
    files = {p.name for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml"}
    checker.expect(
        listed == files,
        f"kustomization.yaml lists every manifest ({', '.join(sorted(files))})",
        f"kustomization.yaml resources differ from the files: not listed {sorted(files - listed)}, missing files {sorted(listed - files)}",
    )


def check_kustomize_build(directory: Path, checker: Checker) -> None:
    """Renders the kustomization when kubectl is installed (optional: it is not needed otherwise)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("skip  kubectl kustomize: kubectl is not installed")
        return
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    checker.expect(
        result.returncode == 0,
        f"`kubectl kustomize {directory.name}` renders {result.stdout.count('kind:')} objects",
        f"`kubectl kustomize {directory}` failed: {result.stderr.strip()}",
    )


def dig(doc: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def subcommand_of(container: dict) -> str | None:
    """The tenantd subcommand a container runs; the image's CMD is `serve`."""
    words = [*(container.get("command") or [])[1:], *(container.get("args") or [])]
    words = [word for word in words if not str(word).startswith("-")]
    return str(words[0]) if words else "serve"


def check_workloads(documents: list[tuple[str, dict]], accepted: dict[str, set[str]], checker: Checker) -> None:
    config = {}  # (kind, name) -> {key: value}
    for _, doc in documents:
        if doc["kind"] in ("ConfigMap", "Secret"):
            keys = {}
            for field in ("data", "stringData", "binaryData"):
                keys.update(doc.get(field) or {})
            config[(doc["kind"], doc["metadata"]["name"])] = keys

    every_accepted = set().union(*accepted.values()) | set(ACCEPTED_OUTSIDE_CLAP)
    for (kind, name), keys in sorted(config.items()):
        unknown = sorted(set(keys) - every_accepted)
        checker.expect(
            not unknown,
            f"{kind}/{name}: all {len(keys)} keys are env vars tenantd accepts",
            f"{kind}/{name}: unknown env var(s) {', '.join(unknown)}: not accepted by `tenantd serve` or `tenantd migrate`",
        )

    workloads = [(where, doc) for where, doc in documents if doc["kind"] in WORKLOAD_POD_SPEC]
    checker.expect(bool(workloads), "the manifests contain workloads", "no workload (Deployment, Job, ...) found")
    for where, doc in workloads:
        pod = dig(doc, WORKLOAD_POD_SPEC[doc["kind"]]) or {}
        label = f"{where}: {doc['kind']}/{doc['metadata']['name']}"
        checker.expect(
            pod.get("enableServiceLinks") is False,
            f"{label}: enableServiceLinks is false",
            f"{label}: set enableServiceLinks: false (Service links inject TENANTD_* variables for a Service named tenantd)",
        )
        for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
            check_container(label, doc, pod, container, config, accepted, checker)


def resolve_env(label: str, container: dict, config: dict, checker: Checker) -> dict[str, str | None]:
    """Env var name -> value where known (None for secrets and unresolvable values)."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom") or []:
        for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if field not in source:
                continue
            name = source[field].get("name")
            keys = config.get((kind, name))
            if keys is None:
                checker.fail(f"{label}: envFrom {kind} {name!r} is not in the manifests, so its keys cannot be checked")
                continue
            for key, value in keys.items():
                env[source.get("prefix", "") + key] = str(value) if kind == "ConfigMap" else None
    for var in container.get("env") or []:
        name = var.get("name")
        value = var.get("value")
        ref = (var.get("valueFrom") or {})
        for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            if field not in ref:
                continue
            keys = config.get((kind, ref[field].get("name")))
            key = ref[field].get("key")
            if keys is None or key not in keys:
                if not ref[field].get("optional"):
                    checker.fail(f"{label}: env {name} refers to {kind} {ref[field].get('name')!r} key {key!r}, which the manifests do not define")
            elif kind == "ConfigMap":
                value = str(keys[key])
        env[name] = value
    return env


def check_container(label, doc, pod, container, config, accepted, checker) -> None:
    label = f"{label} container {container.get('name')}"
    subcommand = subcommand_of(container)
    if subcommand not in accepted:
        checker.fail(f"{label}: runs `tenantd {subcommand}`, which is not a known subcommand ({', '.join(SUBCOMMANDS)})")
        return
    env = resolve_env(label, container, config, checker)
    allowed = accepted[subcommand] | set(ACCEPTED_OUTSIDE_CLAP)
    unknown = sorted(set(env) - allowed)
    checker.expect(
        not unknown,
        f"{label} (tenantd {subcommand}): all {len(env)} env vars accepted: {', '.join(sorted(env))}",
        f"{label} (tenantd {subcommand}): unknown env var(s) {', '.join(unknown)}: `tenantd {subcommand} --help` does not accept them",
    )

    security = container.get("securityContext") or {}
    pod_security = pod.get("securityContext") or {}
    hardened = (
        (security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True)
        and security.get("runAsUser", pod_security.get("runAsUser")) == 10001
        and security.get("readOnlyRootFilesystem") is True
        and security.get("allowPrivilegeEscalation") is False
        and "ALL" in ((security.get("capabilities") or {}).get("drop") or [])
    )
    checker.expect(
        hardened,
        f"{label}: non-root uid 10001, read-only root filesystem, no privilege escalation, capabilities dropped",
        f"{label}: securityContext must set runAsNonRoot, runAsUser 10001, readOnlyRootFilesystem, allowPrivilegeEscalation false, drop ALL",
    )
    if subcommand == "serve":
        check_server(label, doc, pod, container, env, checker)


def check_tls_files(label, pod, container, env, checker) -> None:
    """Every TLS file the server reads lies in a volume mounted from a Secret."""
    secret_volumes = {v["name"] for v in pod.get("volumes") or [] if "secret" in v}
    mounts = [(m["mountPath"].rstrip("/") + "/", m["name"]) for m in container.get("volumeMounts") or []]
    for name in ("TENANTD_TLS_CERT_FILE", "TENANTD_TLS_KEY_FILE", "TENANTD_TLS_CLIENT_CA_FILE"):
        path = env.get(name)
        if not path:
            continue
        volume = next((volume for prefix, volume in mounts if path.startswith(prefix)), None)
        checker.expect(
            volume in secret_volumes,
            f"{label}: {name} {path} is in the Secret volume {volume!r}",
            f"{label}: {name} {path} is not under a volumeMount of a Secret volume",
        )


def check_server(label, doc, pod, container, env, checker) -> None:
    def setting(name: str) -> str | None:
        return env[name] if name in env else SERVE_DEFAULTS.get(name)

    listen = setting("TENANTD_LISTEN_ADDR") or ""
    port = int(listen.rsplit(":", 1)[1]) if re.fullmatch(r".+:\d+", listen) else None
    named_ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    checker.expect(
        port in named_ports.values(),
        f"{label}: containerPort {port} matches TENANTD_LISTEN_ADDR {listen}",
        f"{label}: TENANTD_LISTEN_ADDR {listen!r} port is not a containerPort ({sorted(named_ports.values())})",
    )
    # Kubernetes gRPC probes do not speak TLS: with TLS on, they must use the plaintext
    # health-only port (TENANTD_HEALTH_LISTEN_ADDR), whose port must be a containerPort too.
    health_listen = setting("TENANTD_HEALTH_LISTEN_ADDR") or ""
    health_port = int(health_listen.rsplit(":", 1)[1]) if re.fullmatch(r".+:\d+", health_listen) else None
    tls = bool(setting("TENANTD_TLS_CERT_FILE"))
    if tls:
        checker.expect(
            health_port is not None and health_port in named_ports.values(),
            f"{label}: TLS is on and the plaintext health port {health_port} is a containerPort",
            f"{label}: TLS is on, so set TENANTD_HEALTH_LISTEN_ADDR to a containerPort for the kubelet's gRPC probes",
        )
        check_tls_files(label, pod, container, env, checker)
    probed_port = health_port if health_port is not None else port
    for probe_name, services in (("startupProbe", (LIVENESS, READINESS)), ("readinessProbe", (READINESS,)), ("livenessProbe", (LIVENESS,))):
        probe = container.get(probe_name)
        grpc = (probe or {}).get("grpc")
        if not grpc:
            checker.fail(f"{label}: {probe_name} must be a native grpc probe")
            continue
        service = grpc.get("service", "")
        probe_port = named_ports.get(grpc["port"]) if isinstance(grpc.get("port"), str) else grpc.get("port")
        checker.expect(
            service in services and probe_port == probed_port,
            f"{label}: {probe_name} is grpc service {service!r} on port {probe_port}",
            f"{label}: {probe_name} must probe grpc service {' or '.join(map(repr, services))} on port {probed_port}, not {service!r} on {probe_port}",
        )

    try:
        predrain = int(setting("TENANTD_SHUTDOWN_PREDRAIN_MS"))
        grace = int(setting("TENANTD_SHUTDOWN_GRACE_MS"))
    except (TypeError, ValueError):
        checker.fail(f"{label}: TENANTD_SHUTDOWN_PREDRAIN_MS and TENANTD_SHUTDOWN_GRACE_MS must be known integers (set them in a ConfigMap)")
        return
    termination_ms = 1000 * pod.get("terminationGracePeriodSeconds", 30)
    checker.expect(
        termination_ms >= predrain + grace + 1000,
        f"{label}: terminationGracePeriodSeconds {termination_ms // 1000} s covers pre-drain {predrain} ms + grace {grace} ms (+ >= 1 s margin)",
        f"{label}: terminationGracePeriodSeconds {termination_ms // 1000} s must exceed TENANTD_SHUTDOWN_PREDRAIN_MS {predrain} + TENANTD_SHUTDOWN_GRACE_MS {grace} by at least 1 s",
    )
    if predrain == 0:
        checker.fail(f"{label}: TENANTD_SHUTDOWN_PREDRAIN_MS is 0: new RPCs can be refused before the endpoint is removed everywhere")
    liveness = container.get("livenessProbe") or {}
    liveness_ms = 1000 * liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3)
    checker.expect(
        liveness_ms >= predrain + grace,
        f"{label}: liveness needs {liveness_ms // 1000} s of failures, longer than the shutdown sequence",
        f"{label}: livenessProbe periodSeconds x failureThreshold ({liveness_ms} ms) is shorter than the shutdown sequence ({predrain + grace} ms): the kubelet could kill a draining pod",
    )


def check_selectors(documents: list[tuple[str, dict]], checker: Checker) -> None:
    pod_labels = [
        (f"{doc['kind']}/{doc['metadata']['name']}", dig(doc, ("spec", "template", "metadata", "labels")) or {})
        for _, doc in documents
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
    ]
    for where, doc in documents:
        if doc["kind"] == "Service":
            selector = dig(doc, ("spec", "selector")) or {}
            for port in dig(doc, ("spec", "ports")) or []:
                checker.expect(
                    port.get("appProtocol") == "grpc",
                    f"{where}: Service port {port.get('port')} has appProtocol grpc",
                    f"{where}: Service port {port.get('name')} must set appProtocol: grpc",
                )
        elif doc["kind"] == "PodDisruptionBudget":
            selector = dig(doc, ("spec", "selector", "matchLabels")) or {}
        else:
            continue
        matches = [name for name, labels in pod_labels if selector and all(labels.get(k) == v for k, v in selector.items())]
        checker.expect(
            bool(matches),
            f"{where}: {doc['kind']}/{doc['metadata']['name']} selects the pods of {', '.join(matches)}",
            f"{where}: {doc['kind']}/{doc['metadata']['name']} selector {selector} matches no workload's pods",
        )


def main() -> int:
    parser = argparse.ArgumentParser(description="Check deploy/kubernetes/ against the tenantd binary.")
    parser.add_argument("--dir", type=Path, default=ROOT / "deploy" / "kubernetes", help="manifest directory")
    parser.add_argument("--bin", type=Path, default=Path(os.environ.get("TENANTD_BIN", ROOT / "target" / "debug" / "tenantd")))
    args = parser.parse_args()
    binary = args.bin if args.bin.is_absolute() else (Path.cwd() / args.bin)

    checker = Checker()
    accepted = accepted_env(binary, checker)
    documents = load_documents(args.dir, checker)
    validate_schemas(documents, checker)
    check_kustomization(args.dir, documents, checker)
    check_kustomize_build(args.dir, checker)
    check_workloads(documents, accepted, checker)
    check_selectors(documents, checker)

    if checker.failures:
        print(f"\ncheck-manifests: FAILED: {len(checker.failures)} problem(s), {checker.passed} check(s) passed:")
        for failure in checker.failures:
            print(f"  - {failure}")
        return 1
    print(f"\ncheck-manifests: all {checker.passed} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The official Python `kubernetes` client against a keel master: creates a namespace and a Deployment
(AppsV1Api), lists it by label selector, patches it (strategic merge: replicas, a label, one container's
image by its merge key), reads it back, watches it (from scratch: ADDED then MODIFIED; from the list's
resourceVersion: MODIFIED then DELETED; the Deployment controller's status updates add MODIFIED events) and deletes it. Exits non-zero with a message on any mismatch.

usage: deployment_client.py KUBECONFIG [--namespace NS] [--pause-before-delete]

--pause-before-delete prints "PAUSED before delete" once the patched Deployment has been read back and waits
for a line on stdin, so that a test can look at it from elsewhere first.
"""

import argparse
import sys
import threading
import time

import kubernetes
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NAME = "web"
LABELS = {"app": "py-web"}
SELECTOR = "app=py-web"
WATCH_TIMEOUT_SECONDS = 30


class Mismatch(Exception):
    pass


def expect(what, got, want):
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")
    print(f"ok: {what} = {got!r}")


def deployment(namespace):
    return client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=client.V1ObjectMeta(name=NAME, namespace=namespace, labels=dict(LABELS, tier="backend")),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=LABELS),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=LABELS),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="app",
                            image="registry.local/web:1",
                            ports=[client.V1ContainerPort(container_port=8080)],
                        ),
                        client.V1Container(name="sidecar", image="registry.local/proxy:1"),
                    ]
                ),
            ),
        ),
    )


class Watcher(threading.Thread):
    """Collects the event types (and objects) of one watch of the namespace's selected Deployments until
    `until(type, object)` is true, the server ends the watch, or it fails."""

    def __init__(self, apps, namespace, until, **kwargs):
        super().__init__(daemon=True)
        self.apps, self.namespace, self.until, self.kwargs = apps, namespace, until, kwargs
        self.events = []
        self.error = None
        self.first_event = threading.Event()
        self.watch = watch.Watch()

    def run(self):
        try:
            for event in self.watch.stream(
                self.apps.list_namespaced_deployment,
                self.namespace,
                label_selector=SELECTOR,
                timeout_seconds=WATCH_TIMEOUT_SECONDS,
                **self.kwargs,
            ):
                self.events.append((event["type"], event["object"]))
                self.first_event.set()
                if self.until(event["type"], event["object"]):
                    self.watch.stop()
                    break
        except Exception as e:  # reported by finish()
            self.error = e
        finally:
            self.first_event.set()

    def finish(self, what):
        self.join(WATCH_TIMEOUT_SECONDS + 10)
        if self.is_alive():
            raise Mismatch(f"{what}: the watch did not end")
        if isinstance(self.error, ApiException):
            raise Mismatch(f"{what}: the watch failed: {self.error.status} {self.error.reason}: {self.error.body}")
        if self.error is not None:
            raise Mismatch(f"{what}: the watch failed: {self.error!r}")
        return [t for t, _ in self.events]


def run(kubeconfig, namespace, pause):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    ns = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    expect("created namespace name", ns.metadata.name, namespace)

    created = apps.create_namespaced_deployment(namespace, deployment(namespace))
    expect("created deployment name", created.metadata.name, NAME)
    expect("created deployment replicas", created.spec.replicas, 1)
    expect("created deployment generation", created.metadata.generation, 1)
    if not created.metadata.uid or not created.metadata.resource_version:
        raise Mismatch(f"the created deployment has no uid or resourceVersion: {created.metadata}")

    listed = apps.list_namespaced_deployment(namespace, label_selector=SELECTOR)
    expect("deployments listed by label selector", [d.metadata.name for d in listed.items], [NAME])
    expect("listed deployment uid", listed.items[0].metadata.uid, created.metadata.uid)
    none = apps.list_namespaced_deployment(namespace, label_selector="app=something-else")
    expect("deployments listed by a selector nothing matches", none.items, [])
    everywhere = apps.list_deployment_for_all_namespaces(label_selector=SELECTOR)
    expect(
        "deployments listed in all namespaces",
        [(d.metadata.namespace, d.metadata.name) for d in everywhere.items],
        [(namespace, NAME)],
    )

    # From scratch, a watch first reports what exists (ADDED); the patch below is then MODIFIED (after any
    # status updates the Deployment controller makes, also MODIFIED). From the list's resourceVersion, it
    # reports only what changed after the list.
    fresh = Watcher(apps, namespace, lambda t, o: t == "MODIFIED" and o.spec.replicas == 3)
    fresh.start()
    resumed = Watcher(apps, namespace, lambda t, o: t == "DELETED", resource_version=listed.metadata.resource_version)
    resumed.start()
    if not fresh.first_event.wait(WATCH_TIMEOUT_SECONDS):
        raise Mismatch("the watch from scratch reported nothing within its timeout")

    patch = {
        "metadata": {"labels": {"patched": "yes"}},
        "spec": {
            "replicas": 3,
            # Strategic merge: containers merge by name, so the sidecar stays.
            "template": {"spec": {"containers": [{"name": "app", "image": "registry.local/web:2"}]}},
        },
    }
    patched = apps.patch_namespaced_deployment(NAME, namespace, patch)
    expect("patched replicas", patched.spec.replicas, 3)
    expect("patched resourceVersion changed", patched.metadata.resource_version != created.metadata.resource_version, True)

    events = fresh.finish("watch from scratch")
    expect("first event of the watch from scratch", events[:1], ["ADDED"])
    expect("later events of the watch from scratch", set(events[1:]), {"MODIFIED"})
    modified = fresh.events[-1][1]
    expect("watched MODIFIED object's label", modified.metadata.labels.get("patched"), "yes")
    expect("watched MODIFIED object's resourceVersion", modified.metadata.resource_version, patched.metadata.resource_version)

    got = apps.read_namespaced_deployment(NAME, namespace)
    expect("read back replicas", got.spec.replicas, 3)
    expect("read back labels", got.metadata.labels, {"app": "py-web", "tier": "backend", "patched": "yes"})
    expect(
        "read back containers",
        [(c.name, c.image) for c in got.spec.template.spec.containers],
        [("app", "registry.local/web:2"), ("sidecar", "registry.local/proxy:1")],
    )
    expect("read back port kept by the strategic merge", got.spec.template.spec.containers[0].ports[0].container_port, 8080)
    expect("read back generation", got.metadata.generation, 2)
    expect("read back uid", got.metadata.uid, created.metadata.uid)

    if pause:
        print("PAUSED before delete", flush=True)
        sys.stdin.readline()

    apps.delete_namespaced_deployment(NAME, namespace)
    try:
        apps.read_namespaced_deployment(NAME, namespace)
        raise Mismatch("the deployment is still there after its delete")
    except ApiException as e:
        expect("read after delete: status", e.status, 404)
    events = resumed.finish("watch from the list's resourceVersion")
    expect("events of the watch from the list's resourceVersion", set(events[:-1]), {"MODIFIED"})
    expect("last event of the watch from the list's resourceVersion", events[-1:], ["DELETED"])
    expect("watched DELETED object's uid", resumed.events[-1][1].metadata.uid, created.metadata.uid)
    left = apps.list_namespaced_deployment(namespace)
    expect("deployments left in the namespace", left.items, [])

    # The client checks the status fields Kubernetes always writes: a DaemonSet and a ReplicaSet come back
    # with them (it raises ValueError otherwise).
    template = deployment(namespace).spec.template
    selector = client.V1LabelSelector(match_labels=template.metadata.labels)
    ds = apps.create_namespaced_daemon_set(namespace, client.V1DaemonSet(
        metadata=client.V1ObjectMeta(name="py-agent"),
        spec=client.V1DaemonSetSpec(selector=selector, template=template)))
    expect("new DaemonSet's numberReady", ds.status.number_ready, 0)
    rs = apps.create_namespaced_replica_set(namespace, client.V1ReplicaSet(
        metadata=client.V1ObjectMeta(name="py-set"),
        spec=client.V1ReplicaSetSpec(replicas=0, selector=selector, template=template)))
    expect("new ReplicaSet's status.replicas", rs.status.replicas, 0)
    apps.delete_namespaced_daemon_set("py-agent", namespace)
    apps.delete_namespaced_replica_set("py-set", namespace)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kubeconfig")
    parser.add_argument("--namespace", default="py-client")
    parser.add_argument("--pause-before-delete", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        run(args.kubeconfig, args.namespace, args.pause_before_delete)
    except Mismatch as e:
        print(f"MISMATCH: {e}", file=sys.stderr)
        sys.exit(1)
    except ApiException as e:
        print(f"API ERROR: {e.status} {e.reason}: {e.body}", file=sys.stderr)
        sys.exit(1)
    print(f"the kubernetes client {kubernetes.__version__} passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()

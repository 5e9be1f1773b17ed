use serde_json::json;

use super::*;

fn claim(v: serde_json::Value) -> PersistentVolumeClaim {
    serde_json::from_value(v).unwrap()
}

fn volume(v: serde_json::Value) -> PersistentVolume {
    serde_json::from_value(v).unwrap()
}

fn class(name: &str, provisioner: &str, mode: &str) -> StorageClass {
    serde_json::from_value(json!({"metadata": {"name": name}, "provisioner": provisioner,
        "reclaimPolicy": "Delete", "volumeBindingMode": mode}))
    .unwrap()
}

fn data_claim(class: &str, size: &str) -> serde_json::Value {
    json!({"metadata": {"name": "data", "namespace": "db", "uid": "u1"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class, "resources": {"requests": {"storage": size}}},
        "status": {"phase": "Pending"}})
}

fn static_pv(name: &str, size: &str, node: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
        "storageClassName": "manual", "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": "/srv"},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
        "status": {"phase": "Available"}})
}

#[test]
fn a_local_claim_waits_for_its_consumer_then_gets_a_volume_on_its_node() {
    let classes = [class("local", LOCAL_PROVISIONER, "WaitForFirstConsumer")];
    let mut c = data_claim("local", "1Gi");
    assert_eq!(claim_step(&claim(c.clone()), &[], &classes), ClaimStep::WaitForFirstConsumer);
    c["metadata"]["annotations"] = json!({SELECTED_NODE: "node-2"});
    let ClaimStep::Provision(pv) = claim_step(&claim(c.clone()), &[], &classes) else { panic!("provisions") };
    let pv = serde_json::to_value(&*pv).unwrap();
    assert_eq!(pv["metadata"]["name"], "pvc-u1");
    assert_eq!(pv["spec"]["csi"], json!({"driver": LOCAL_PROVISIONER, "volumeHandle": "pvc-u1"}));
    assert_eq!(pv["spec"]["claimRef"]["uid"], "u1");
    assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        json!(["node-2"])
    );
    // Once it exists, the claim binds to it.
    let made = volume(pv);
    assert_eq!(claim_step(&claim(c), &[made], &classes), ClaimStep::Bind("pvc-u1".into()));
}

#[test]
fn static_volumes_bind_by_class_size_modes_and_node() {
    let classes = [class("manual", "kubernetes.io/no-provisioner", "Immediate")];
    let c = claim(data_claim("manual", "5Gi"));
    let small = volume(static_pv("small", "1Gi", "node-1"));
    let big = volume(static_pv("big", "10Gi", "node-1"));
    let bigger = volume(static_pv("bigger", "20Gi", "node-1"));
    assert_eq!(claim_step(&c, &[small.clone(), bigger.clone(), big.clone()], &classes), ClaimStep::Bind("big".into()));
    assert!(matches!(claim_step(&c, &[small], &classes), ClaimStep::Nothing), "an external provisioner's class waits");
    let nothing = claim(data_claim("", "5Gi"));
    assert!(matches!(claim_step(&nothing, &[], &[]), ClaimStep::NoMatch(_)));
    // A claim bound and Bound needs nothing; one whose volume vanished is Lost.
    let mut bound = data_claim("manual", "5Gi");
    bound["spec"]["volumeName"] = json!("gone");
    bound["status"]["phase"] = json!("Bound");
    assert_eq!(claim_step(&claim(bound), &[big], &classes), ClaimStep::Lost);
}

#[test]
fn volumes_go_available_bound_and_released() {
    let mut pv = static_pv("v", "1Gi", "n");
    pv["status"]["phase"] = json!("Pending");
    assert_eq!(volume_step(&volume(pv.clone()), &[]), VolumeStep::Phase("Available"));
    pv["spec"]["claimRef"] = json!({"namespace": "db", "name": "data", "uid": "u1"});
    let mut c = data_claim("manual", "1Gi");
    c["spec"]["volumeName"] = json!("v");
    assert_eq!(volume_step(&volume(pv.clone()), &[claim(c)]), VolumeStep::Phase("Bound"));
    pv["status"]["phase"] = json!("Bound");
    assert_eq!(volume_step(&volume(pv.clone()), &[]), VolumeStep::Phase("Released"), "Retain keeps it, released");
    pv["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete");
    assert_eq!(volume_step(&volume(pv), &[]), VolumeStep::Delete);
}

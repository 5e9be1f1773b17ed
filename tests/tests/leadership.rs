//! Which master runs the control loops (docs/adr/002), as each master reports it in `/readyz?verbose`
//! (`[+]controller-leader ok: <name>`, `(this master)` on the leader): exactly one master leads; stacked,
//! it is the master whose member leads Raft, and a kill -9 of it moves the lead to the next Raft leader
//! with a newer fence; on an external store, a killed leader's lease is revoked by the others as soon as
//! its address refuses connections and another master takes over, and a leader stopped cleanly resigns so
//! that another takes over.

use std::time::{Duration, Instant};

use keel_apiserver::leadership::{holder, LEADER_KEY};
use keel_proto::etcdserverpb::RangeRequest;
use keel_tests::masters::{Api, ExternalMasters};
use keel_tests::{Cluster, Options};

/// The leader each master names, and whether it says it is the one; `None` for a master that did not answer.
fn reports(apis: &[(usize, Api)]) -> Vec<(usize, Option<(String, bool)>)> {
    apis.iter()
        .map(|(i, api)| {
            let out = api.kubectl(&["get", "--raw", "/readyz?verbose", "--request-timeout=3s"], None).ok();
            let text = out.filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            let line = text.as_deref().and_then(|t| t.lines().find(|l| l.starts_with("[+]controller-leader ok")));
            let note = line.and_then(|l| l.split_once(": ")).map(|(_, n)| n.to_string());
            (*i, note.map(|n| (n.trim_end_matches(" (this master)").to_string(), n.ends_with("(this master)"))))
        })
        .collect()
}

/// Waits until every master in `apis` names the same leader, which says it leads; returns its index.
fn agreed_leader(apis: &[(usize, Api)], names: &dyn Fn(usize) -> String, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = reports(apis);
        let leaders: Vec<usize> =
            last.iter().filter(|(_, r)| r.as_ref().is_some_and(|(_, me)| *me)).map(|(i, _)| *i).collect();
        if let [leader] = leaders[..] {
            let name = names(leader);
            if last.iter().all(|(_, r)| r.as_ref().is_some_and(|(n, _)| *n == name)) {
                return leader;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the masters did not agree on one leader within {within:?}: {last:?}");
}

async fn leader_key(c: &Cluster, i: usize) -> (String, i64) {
    let mut kv = c.kv(i).await.unwrap();
    let resp = kv.range(RangeRequest { key: LEADER_KEY.into(), ..Default::default() }).await.unwrap().into_inner();
    let kv = resp.kvs.first().expect("the leader key exists").clone();
    (holder(&kv.value).unwrap(), kv.mod_revision)
}

#[tokio::test(flavor = "multi_thread")]
async fn stacked_masters_follow_raft_leadership() {
    let mut c = Cluster::start_with(3, Options { masters: true, ..Default::default() }).await.unwrap();
    for i in 0..3 {
        c.api(i).wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    let names: Vec<String> = c.members.iter().map(|m| m.name.clone()).collect();
    let name_of = |i: usize| names[i].clone();
    let apis: Vec<(usize, Api)> = (0..3).map(|i| (i, c.api(i))).collect();
    let leader = agreed_leader(&apis, &name_of, Duration::from_secs(20));
    assert_eq!(leader, c.wait_leader(Duration::from_secs(10)).await.unwrap(), "the loops' leader is the Raft leader");
    let (holder, fence) = leader_key(&c, leader).await;
    assert_eq!(holder, names[leader]);
    let lease = controller_lease(&c.api(leader), &names[leader]);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15, "{lease}");

    c.kill(leader);
    let rest: Vec<(usize, Api)> = apis.into_iter().filter(|(i, _)| *i != leader).collect();
    let next = agreed_leader(&rest, &name_of, Duration::from_secs(20));
    assert_eq!(next, c.wait_leader(Duration::from_secs(10)).await.unwrap());
    let (holder, next_fence) = leader_key(&c, next).await;
    assert_eq!(holder, names[next]);
    assert!(next_fence > fence, "a new leader has a newer fence ({next_fence} after {fence})");
    let lease = controller_lease(&c.api(next), &names[next]);
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
}

/// `kube-system/keel-controller-manager`, once it names `holder` (the leader renews it every 2 s).
fn controller_lease(api: &Api, holder: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        if let Ok(out) = api.ok(&["-n", "kube-system", "get", "lease", "keel-controller-manager", "-o", "json"], None) {
            last = serde_json::from_str(&out).unwrap();
            if last["spec"]["holderIdentity"] == holder {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the controller Lease does not name {holder}: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn masters_on_an_external_store_hand_over_by_lease() {
    let store = Cluster::start(3).await.unwrap();
    let mut masters = ExternalMasters::start(&store, 3).unwrap();
    for i in 0..3 {
        masters.api(i).wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    let names: Vec<String> = (0..3).map(|i| masters.name(i).to_string()).collect();
    let name_of = |i: usize| names[i].clone();
    let apis: Vec<(usize, Api)> = (0..3).map(|i| (i, masters.api(i))).collect();
    let first = agreed_leader(&apis, &name_of, Duration::from_secs(20));
    let (_, first_fence) = leader_key(&store, 0).await;

    // kill -9: its address refuses connections, so the others revoke its lease without waiting out the
    // TTL (3 s), and another master leads.
    masters.kill(first);
    let rest: Vec<(usize, Api)> = apis.into_iter().filter(|(i, _)| *i != first).collect();
    let second = agreed_leader(&rest, &name_of, Duration::from_secs(30));
    let (holder, second_fence) = leader_key(&store, 0).await;
    assert_eq!(holder, names[second]);
    assert!(second_fence > first_fence);
    let deposed = rest
        .iter()
        .any(|(i, _)| masters.log(*i).contains("refuses connections (its process is gone): revoking its lease"));
    assert!(deposed, "no master revoked the dead leader's lease; the handover waited for the TTL");

    // A clean stop resigns (revokes its lease before the process exits): the last master leads.
    masters.stop(second);
    assert!(masters.log(second).contains("resigned the control loops"), "the stopped leader did not resign");
    let last: Vec<(usize, Api)> = rest.into_iter().filter(|(i, _)| *i != second).collect();
    let third = agreed_leader(&last, &name_of, Duration::from_secs(30));
    assert_eq!(leader_key(&store, 0).await.0, names[third]);
}

//! Membership changes under traffic, through etcd's Cluster API as an operator would make them: a member is
//! removed and stopped, then added back as a new member — a learner on an empty data dir, with a new peer
//! URL and so a new id — and promoted to voter once the leader says it has caught up.

use std::time::Duration;

use keel_proto::etcdserverpb::cluster_client::ClusterClient;
use keel_proto::etcdserverpb::{MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest};
use tonic::transport::{Channel, Endpoint};

use crate::members::{Member, Server};

/// How long each step may keep retrying.
const STEP: Duration = Duration::from_secs(20);

fn client(url: &str) -> ClusterClient<Channel> {
    let ch = Endpoint::from_shared(url.to_string())
        .expect("member URLs are valid")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    ClusterClient::new(ch)
}

/// Retries `f` against the members at `urls` in turn until it answers or `STEP` is over.
async fn retry<T, F, Fut>(urls: &[String], what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut(ClusterClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + STEP;
    let mut last = String::new();
    for turn in 0.. {
        match f(client(&urls[turn % urls.len()])).await {
            Ok(Some(t)) => return Ok(t),
            Ok(None) => {}
            Err(s) => last = s.message().to_string(),
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(format!("{what}: gave up after {STEP:?} ({last})"))
}

/// The id of the member whose peer URL is `peer`, as the cluster lists it (None: not listed).
async fn id_of(mut c: ClusterClient<Channel>, peer: &str) -> Result<Option<u64>, tonic::Status> {
    let list = c.member_list(MemberListRequest { linearizable: true }).await?.into_inner();
    Ok(list.members.iter().find(|m| m.peer_ur_ls.iter().any(|u| u == peer)).map(|m| m.id))
}

/// Replaces member `i`: remove, stop, add back as a learner on an empty data dir, start. Returns the new
/// member's id, to [`promote`] (after the other faults of the round are healed: a learner may not catch up
/// over a slow or lossy link), or what went wrong (the run goes on: the checkers judge the history either
/// way).
pub async fn replace(members: &mut [Member], i: usize, server: &Server) -> Result<u64, String> {
    let others: Vec<String> = (0..members.len()).filter(|&j| j != i).map(|j| members[j].client_url()).collect();
    let old_peer = members[i].peer_url();
    let old = retry(&others, "find the member", |c| {
        let p = old_peer.clone();
        async move { id_of(c, &p).await.map(|id| Some(id.ok_or(()))) }
    })
    .await?
    .map_err(|()| format!("{old_peer} is not a member"))?;
    retry(&others, "remove", |mut c| async move {
        match c.member_remove(MemberRemoveRequest { id: old }).await {
            Ok(_) => Ok(Some(())),
            // An earlier attempt did it.
            Err(s) if s.message().contains("member not found") => Ok(Some(())),
            Err(s) => Err(s),
        }
    })
    .await?;
    members[i].kill();

    let new_peer = members[i].next_peer_url();
    let new = retry(&others, "add", |mut c| {
        let p = new_peer.clone();
        async move {
            match c.member_add(MemberAddRequest { peer_ur_ls: vec![p.clone()], is_learner: true }).await {
                Ok(r) => Ok(r.into_inner().member.map(|m| m.id)),
                // An earlier attempt did it: look the id up.
                Err(s) if s.message().contains("already exist") => id_of(c, &p).await,
                Err(s) => Err(s),
            }
        }
    })
    .await?;
    let cluster: Vec<String> = (0..members.len())
        .map(|j| {
            if j == i {
                format!("{}={new_peer}", members[j].name)
            } else {
                format!("{}={}", members[j].name, members[j].peer_url())
            }
        })
        .collect();
    members[i].renew(&cluster.join(","));
    members[i].start(server, "existing").map_err(|e| format!("start {}: {e}", members[i].name))?;
    Ok(new)
}

/// Promotes learner `id` through the members at `urls`, retrying while it has not caught up.
pub async fn promote(urls: &[String], id: u64) -> Result<(), String> {
    retry(urls, "promote", |mut c| async move {
        match c.member_promote(MemberPromoteRequest { id }).await {
            Ok(_) => Ok(Some(())),
            Err(s) if s.message().contains("not a learner") => Ok(Some(())),
            Err(s) => Err(s),
        }
    })
    .await
}

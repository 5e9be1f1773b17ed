//! Membership changes under traffic, through etcd's Cluster API as an operator would make them: a member is
//! removed and stopped, then added back as a new member — a learner on an empty data dir, with a new peer
//! URL and so a new id — and promoted to voter once the leader says it has caught up.

use std::time::Duration;

use tokio::time::Instant;

use keel_proto::etcdserverpb::cluster_client::ClusterClient;
use keel_proto::etcdserverpb::{MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest};
use tonic::transport::{Channel, Endpoint};

use crate::members::{Member, Server};

fn client(url: &str) -> ClusterClient<Channel> {
    let ch = Endpoint::from_shared(url.to_string())
        .expect("member URLs are valid")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(3))
        .connect_lazy();
    ClusterClient::new(ch)
}

/// Retries `f` against the members at `urls` in turn until it answers or `until` has passed.
async fn retry<T, F, Fut>(urls: &[String], what: &str, until: Instant, mut f: F) -> Result<T, String>
where
    F: FnMut(ClusterClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, tonic::Status>>,
{
    let mut last = String::new();
    for turn in 0.. {
        let attempt = tokio::time::timeout_at(until.max(Instant::now() + Duration::from_millis(500)), async {
            f(client(&urls[turn % urls.len()])).await
        });
        match attempt.await {
            Ok(Ok(Some(t))) => return Ok(t),
            Ok(Ok(None)) => {}
            Ok(Err(s)) => last = s.message().to_string(),
            Err(_) => last = "timed out".into(),
        }
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(format!("{what}: not done in time ({last})"))
}

/// The id of the member whose peer URL is `peer`, as the cluster lists it (None: not listed).
async fn id_of(mut c: ClusterClient<Channel>, peer: &str) -> Result<Option<u64>, tonic::Status> {
    let list = c.member_list(MemberListRequest { linearizable: true }).await?.into_inner();
    Ok(list.members.iter().find(|m| m.peer_ur_ls.iter().any(|u| u == peer)).map(|m| m.id))
}

/// One member's replacement, step by step: find its id, remove it, stop it, add a learner with the next
/// peer URL (a new id), start it on an empty data dir, promote it. [`Replacement::advance`] goes as far
/// as it can by a deadline and can be called again to go on (a round's other faults may stop it
/// half-way; after they are healed it finishes). An unanswered removal or addition is looked up when
/// retried, so no step is done twice.
#[derive(Debug)]
pub struct Replacement {
    pub member: usize,
    old: Option<u64>,
    removed: bool,
    new: Option<u64>,
    started: bool,
    pub done: bool,
}

impl Replacement {
    pub fn new(member: usize) -> Replacement {
        Replacement { member, old: None, removed: false, new: None, started: false, done: false }
    }

    pub async fn advance(&mut self, members: &mut [Member], server: &Server, until: Instant) -> Result<(), String> {
        let i = self.member;
        let others: Vec<String> = (0..members.len()).filter(|&j| j != i).map(|j| members[j].client_url()).collect();
        if self.old.is_none() && !self.removed {
            let peer = members[i].peer_url();
            let old = retry(&others, "find the member", until, |c| {
                let p = peer.clone();
                async move { id_of(c, &p).await.map(|id| Some(id.ok_or(()))) }
            })
            .await?
            .map_err(|()| format!("{peer} is not a member"))?;
            self.old = Some(old);
        }
        if !self.removed {
            let old = self.old.expect("found above");
            retry(&others, "remove", until, |mut c| async move {
                match c.member_remove(MemberRemoveRequest { id: old }).await {
                    Ok(_) => Ok(Some(())),
                    // An earlier, unanswered attempt did it.
                    Err(s) if s.message().contains("member not found") => Ok(Some(())),
                    Err(s) => Err(s),
                }
            })
            .await?;
            self.removed = true;
            members[i].kill();
        }
        if self.new.is_none() {
            let peer = members[i].next_peer_url();
            let new = retry(&others, "add", until, |mut c| {
                let p = peer.clone();
                async move {
                    match c.member_add(MemberAddRequest { peer_ur_ls: vec![p.clone()], is_learner: true }).await {
                        Ok(r) => Ok(r.into_inner().member.map(|m| m.id)),
                        // An earlier, unanswered attempt did it: look the id up.
                        Err(s) if s.message().contains("already exist") => id_of(c, &p).await,
                        Err(s) => Err(s),
                    }
                }
            })
            .await?;
            self.new = Some(new);
        }
        if !self.started {
            let cluster: Vec<String> = (0..members.len())
                .map(|j| {
                    let url = if j == i { members[j].next_peer_url() } else { members[j].peer_url() };
                    format!("{}={url}", members[j].name)
                })
                .collect();
            members[i].renew(&cluster.join(","));
            members[i].start(server, "existing").map_err(|e| format!("start {}: {e}", members[i].name))?;
            self.started = true;
        }
        // Promotion is refused until the learner has caught up.
        let new = self.new.expect("added above");
        retry(&others, "promote", until, |mut c| async move {
            match c.member_promote(MemberPromoteRequest { id: new }).await {
                Ok(_) => Ok(Some(())),
                Err(s) if s.message().contains("not a learner") => Ok(Some(())),
                Err(s) => Err(s),
            }
        })
        .await?;
        self.done = true;
        Ok(())
    }
}

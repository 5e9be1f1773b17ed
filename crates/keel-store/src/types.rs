//! openraft's type configuration for keel's store, and the values a Raft log entry carries.

use std::fmt;

use keel_proto::raftpb::{Proposal, ProposalResult};
use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A member's id: etcd's 64-bit member id, derived from its name, peer URLs and the cluster token.
pub type NodeId = u64;

/// What Raft's membership records about a member: enough to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub peer_urls: Vec<String>,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.peer_urls.join(","))
    }
}

/// The command in a Raft log entry: client writes, as protobuf.
#[derive(Debug, Clone, PartialEq)]
pub struct Command(pub Proposal);

/// What applying a [`Command`] returned: one response per write.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CommandResult(pub ProposalResult);

/// Both travel and rest as their protobuf encoding, so the log's format is the .proto's.
fn ser_proto<M: Message, S: Serializer>(m: &M, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(&m.encode_to_vec())
}

fn de_proto<'de, M: Message + Default, D: Deserializer<'de>>(d: D) -> Result<M, D::Error> {
    let bytes: serde_bytes_vec::Bytes = Deserialize::deserialize(d)?;
    M::decode(bytes.0.as_slice()).map_err(serde::de::Error::custom)
}

mod serde_bytes_vec {
    //! A byte vector that deserialises from serde's bytes (what `serialize_bytes` wrote) in any format.
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use std::fmt;

    pub struct Bytes(pub Vec<u8>);

    impl<'de> serde::Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                    Ok(Bytes(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                    let mut out = Vec::new();
                    while let Some(b) = seq.next_element::<u8>()? {
                        out.push(b);
                    }
                    Ok(Bytes(out))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ser_proto(&self.0, s)
    }
}
impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_proto(d).map(Command)
    }
}
impl Serialize for CommandResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ser_proto(&self.0, s)
    }
}
impl<'de> Deserialize<'de> for CommandResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_proto(d).map(CommandResult)
    }
}

openraft::declare_raft_types!(
    /// keel's store: protobuf commands, u64 member ids, snapshots as files.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot_data::SnapshotData,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type StorageError = openraft::StorageError<NodeId>;

//! The API server's storage layer against a real 3-member keel store: creates never overwrite, updates and
//! deletes from an old resourceVersion change nothing, lists page at one revision, a compacted revision is
//! reported as such.

use keel_apiserver::storage::{Storage, StorageError};
use keel_proto::etcdserverpb::CompactionRequest;
use keel_tests::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_created_updated_listed_and_deleted_with_optimistic_concurrency() -> anyhow::Result<()> {
    let c = Cluster::start(3).await?;
    // Through a follower as well as the leader: any master serves any request.
    let leader = c.wait_leader(std::time::Duration::from_secs(30)).await?;
    let follower = (leader + 1) % 3;
    let s = Storage::new(c.channel(follower).await?);
    let other = Storage::new(c.channel(leader).await?);

    let key = "/registry/configmaps/default/a";
    let r1 = s.create(key, b"one".to_vec()).await?;
    assert!(matches!(other.create(key, b"again".to_vec()).await, Err(StorageError::AlreadyExists)));
    let got = other.get(key).await?;
    assert_eq!((got.value.as_slice(), got.mod_revision, got.create_revision), (&b"one"[..], r1, r1));

    let r2 = s.update(key, b"two".to_vec(), r1).await?;
    assert!(r2 > r1);
    match other.update(key, b"stale".to_vec(), r1).await {
        Err(StorageError::Conflict { current }) => assert_eq!(current, r2),
        other => panic!("an update from an old resourceVersion: {other:?}"),
    }
    assert_eq!(s.get(key).await?.value, b"two");
    assert!(matches!(s.update("/registry/configmaps/default/none", vec![], 1).await, Err(StorageError::NotFound)));

    for name in ["b", "c", "d", "e"] {
        s.create(&format!("/registry/configmaps/default/{name}"), name.as_bytes().to_vec()).await?;
    }
    s.create("/registry/configmaps/other/x", b"x".to_vec()).await?;
    let first = s.list("/registry/configmaps/default/", None, 2, 0).await?;
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.remaining, 3);
    // A change after the first page is not in the rest of the list, which reads at the first page's revision.
    s.create("/registry/configmaps/default/f", b"f".to_vec()).await?;
    let start = format!("{}\0", first.items[1].key);
    let rest = s.list("/registry/configmaps/default/", Some(&start), 0, first.revision).await?;
    let names: Vec<&str> = rest.items.iter().map(|i| i.key.rsplit('/').next().unwrap()).collect();
    assert_eq!(names, ["c", "d", "e"]);
    assert_eq!((rest.remaining, rest.revision), (0, first.revision));

    match s.delete(key, Some(r1)).await {
        Err(StorageError::Conflict { current }) => assert_eq!(current, r2),
        other => panic!("a delete from an old resourceVersion: {other:?}"),
    }
    let (gone, at) = s.delete(key, Some(r2)).await?;
    assert_eq!((gone.value.as_slice(), gone.mod_revision), (&b"two"[..], r2));
    assert!(at > r2);
    assert!(matches!(s.get(key).await, Err(StorageError::NotFound)));
    assert!(matches!(s.delete(key, None).await, Err(StorageError::NotFound)));
    let (gone, _) = s.delete("/registry/configmaps/default/b", None).await?;
    assert_eq!(gone.value, b"b");

    let mut kv = c.kv(leader).await?;
    kv.compact(CompactionRequest { revision: at, physical: true }).await?;
    assert!(matches!(
        s.list("/registry/configmaps/", None, 0, first.revision).await,
        Err(StorageError::Compacted { requested }) if requested == first.revision
    ));
    Ok(())
}

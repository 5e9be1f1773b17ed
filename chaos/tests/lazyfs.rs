//! The LazyFS-like filesystem against the kernel: real mounts over temporary directories (root only).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_chaos::lazyfs::{self, DropStats, LazyMount, WRITEBACK_CAP};

/// A mount over `<tmp>/keel-lazyfs-<pid>-<name>/{backing,mnt}`, unmounted and removed when dropped (also
/// when the test fails).
struct Fixture {
    mount: Option<LazyMount>,
    base: PathBuf,
}

impl Fixture {
    /// None (with a note) when not root: mounting needs it.
    fn new(name: &str) -> Option<Fixture> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping lazyfs test {name}: mounting FUSE needs root");
            return None;
        }
        let base = std::env::temp_dir().join(format!("keel-lazyfs-{}-{name}", std::process::id()));
        lazyfs::unmount_stale(&base);
        let _ = std::fs::remove_dir_all(&base);
        let mount = lazyfs::mount(&base.join("backing"), &base.join("mnt")).expect("mount");
        Some(Fixture { mount: Some(mount), base })
    }

    fn mount(&self) -> &LazyMount {
        self.mount.as_ref().expect("mounted")
    }

    /// A path inside the mount.
    fn m(&self, rel: &str) -> PathBuf {
        self.mount().mountpoint().join(rel)
    }

    /// The same path in the backing directory (what survives a crash).
    fn b(&self, rel: &str) -> PathBuf {
        self.base.join("backing").join(rel)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.mount.take());
        lazyfs::unmount_stale(&self.base);
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn rw(path: &Path) -> File {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).expect("open")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read")
}

#[test]
fn unsynced_writes_are_dropped_and_synced_ones_kept() {
    let Some(fx) = Fixture::new("basic") else { return };
    let mut f = rw(&fx.m("a"));
    f.write_all(b"AAAA").unwrap();
    f.sync_all().unwrap();
    f.write_all(b"BBBB").unwrap();
    f.write_all_at(b"xx", 1).unwrap();
    assert_eq!(read(&fx.m("a")), b"AxxABBBB");
    assert_eq!(std::fs::metadata(fx.m("a")).unwrap().len(), 8);
    assert_eq!(f.metadata().unwrap().len(), 8);
    assert_eq!(read(&fx.b("a")), b"AAAA", "unsynced data must not reach the backing file");

    assert_eq!(fx.mount().drop_unsynced(), DropStats { files: 1, bytes: 6 });
    assert_eq!(read(&fx.m("a")), b"AAAA");
    assert_eq!(std::fs::metadata(fx.m("a")).unwrap().len(), 4);
    assert_eq!(f.metadata().unwrap().len(), 4);
    assert_eq!(fx.mount().drop_unsynced(), DropStats::default());

    // fdatasync writes back too, and what was written back survives the next drop.
    f.write_all_at(b"CC", 4).unwrap();
    f.sync_data().unwrap();
    f.write_all_at(b"DD", 6).unwrap();
    fx.mount().drop_unsynced();
    assert_eq!(read(&fx.m("a")), b"AAAACC");
    assert_eq!(read(&fx.b("a")), b"AAAACC");

    // A file created and written but never synced exists (creation is metadata) but is empty.
    std::fs::write(fx.m("new"), b"hello").unwrap();
    assert_eq!(read(&fx.m("new")), b"hello");
    fx.mount().drop_unsynced();
    assert_eq!(read(&fx.m("new")), b"");

    // O_SYNC writes are durable as they return.
    let mut s = OpenOptions::new().write(true).create(true).custom_flags(libc::O_SYNC).open(fx.m("sync")).unwrap();
    s.write_all(b"durable").unwrap();
    assert_eq!(fx.mount().drop_unsynced(), DropStats::default());
    assert_eq!(read(&fx.m("sync")), b"durable");

    // Writes past the end leave a zero-filled gap; dropped, the file is back to its synced size.
    let g = rw(&fx.m("gap"));
    g.write_all_at(b"z", 10).unwrap();
    assert_eq!(read(&fx.m("gap")), b"\0\0\0\0\0\0\0\0\0\0z");
    fx.mount().drop_unsynced();
    assert_eq!(g.metadata().unwrap().len(), 0);
}

#[test]
fn dirty_data_past_the_cap_is_written_back() {
    let Some(fx) = Fixture::new("cap") else { return };
    let f = rw(&fx.m("big"));
    let chunk = vec![7u8; 1 << 20];
    let n = WRITEBACK_CAP / chunk.len() as u64 + 2;
    for i in 0..n {
        f.write_all_at(&chunk, i * chunk.len() as u64).unwrap();
    }
    let stats = fx.mount().drop_unsynced();
    assert!(stats.bytes < WRITEBACK_CAP, "{stats:?}");
    let len = f.metadata().unwrap().len();
    assert!(len > WRITEBACK_CAP, "written back early: {len}");
    assert_eq!(len + stats.bytes, n * chunk.len() as u64);
}

#[test]
fn metadata_operations_behave_as_on_a_normal_fs() {
    let Some(fx) = Fixture::new("meta") else { return };
    std::fs::create_dir(fx.m("d")).unwrap();
    std::fs::write(fx.m("d/f"), b"one").unwrap();
    File::open(fx.m("d/f")).unwrap().sync_all().unwrap();
    let names = |p: PathBuf| {
        let mut v: Vec<String> =
            std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(names(fx.m("d")), ["f"]);

    // Renames of files and of directories (whose children move with them).
    std::fs::rename(fx.m("d/f"), fx.m("d/g")).unwrap();
    assert!(!fx.m("d/f").exists());
    std::fs::rename(fx.m("d"), fx.m("e")).unwrap();
    assert_eq!(names(fx.mount().mountpoint().to_path_buf()), ["e"]);
    assert_eq!(read(&fx.m("e/g")), b"one");
    let g = rw(&fx.m("e/g"));
    g.write_all_at(b"two", 3).unwrap();
    g.sync_all().unwrap();
    assert_eq!(read(&fx.b("e/g")), b"onetwo");

    // Hard links share one inode and its dirty data; the data outlives one link's removal.
    std::fs::hard_link(fx.m("e/g"), fx.m("h")).unwrap();
    assert_eq!(std::fs::metadata(fx.m("h")).unwrap().nlink(), 2);
    assert_eq!(std::fs::metadata(fx.m("h")).unwrap().ino(), std::fs::metadata(fx.m("e/g")).unwrap().ino());
    rw(&fx.m("h")).write_all_at(b"three", 6).unwrap();
    assert_eq!(read(&fx.m("e/g")), b"onetwothree");
    std::fs::remove_file(fx.m("e/g")).unwrap();
    assert_eq!(read(&fx.m("h")), b"onetwothree");
    assert_eq!(std::fs::metadata(fx.m("h")).unwrap().nlink(), 1);
    assert_eq!(fx.mount().drop_unsynced(), DropStats { files: 1, bytes: 5 });
    assert_eq!(read(&fx.m("h")), b"onetwo");

    // Truncate: shrinking clips dirty data, growing fills zeros; both go straight to the backing file.
    let t = rw(&fx.m("t"));
    t.write_all_at(&[1u8; 100], 0).unwrap();
    t.sync_all().unwrap();
    t.write_all_at(&[2u8; 100], 100).unwrap();
    t.set_len(150).unwrap();
    let mut want = [vec![1u8; 100], vec![2u8; 50]].concat();
    assert_eq!(read(&fx.m("t")), want);
    t.set_len(120).unwrap();
    want.truncate(120);
    assert_eq!(read(&fx.m("t")), want);
    assert_eq!(fx.mount().drop_unsynced(), DropStats { files: 1, bytes: 20 });
    want[100..].fill(0);
    assert_eq!(read(&fx.m("t")), want);
    t.set_len(10).unwrap();
    assert_eq!(read(&fx.m("t")), [1u8; 10]);

    // Unlinking a closed file's last link forgets its dirty data.
    std::fs::write(fx.m("u"), b"gone").unwrap();
    std::fs::remove_file(fx.m("u")).unwrap();
    assert_eq!(fx.mount().drop_unsynced(), DropStats::default());

    // An unlinked file stays readable through its open descriptor.
    let mut o = rw(&fx.m("open"));
    o.write_all(b"still here").unwrap();
    std::fs::remove_file(fx.m("open")).unwrap();
    let mut s = String::new();
    o.seek(SeekFrom::Start(0)).unwrap();
    o.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    drop(o);

    // Rename over an existing file replaces it; RENAME_NOREPLACE refuses to.
    std::fs::write(fx.m("x"), b"x").unwrap();
    std::fs::write(fx.m("y"), b"y").unwrap();
    let (cx, cy) = (c"x", c"y");
    let dir = File::open(fx.mount().mountpoint()).unwrap();
    // SAFETY: valid directory descriptor and NUL-terminated names.
    let r =
        unsafe { libc::renameat2(dir.as_raw_fd(), cx.as_ptr(), dir.as_raw_fd(), cy.as_ptr(), libc::RENAME_NOREPLACE) };
    assert_eq!(r, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EEXIST));
    std::fs::rename(fx.m("x"), fx.m("y")).unwrap();
    assert_eq!(read(&fx.m("y")), b"x");
    assert!(!fx.m("x").exists());
    // SAFETY: as above.
    let r =
        unsafe { libc::renameat2(dir.as_raw_fd(), cy.as_ptr(), dir.as_raw_fd(), cx.as_ptr(), libc::RENAME_NOREPLACE) };
    assert_eq!(r, 0);
    assert_eq!(read(&fx.m("x")), b"x");
    // RENAME_EXCHANGE swaps two names, and so which file each path writes to.
    std::fs::write(fx.m("y"), b"y").unwrap();
    // SAFETY: as above.
    let r =
        unsafe { libc::renameat2(dir.as_raw_fd(), cx.as_ptr(), dir.as_raw_fd(), cy.as_ptr(), libc::RENAME_EXCHANGE) };
    assert_eq!(r, 0);
    assert_eq!((read(&fx.m("x")), read(&fx.m("y"))), (b"y".to_vec(), b"x".to_vec()));
    let x = rw(&fx.m("x"));
    x.write_all_at(b"Y", 0).unwrap();
    x.sync_all().unwrap();
    assert_eq!((read(&fx.m("y")), read(&fx.b("y"))), (b"x".to_vec(), b"".to_vec()), "y's data is still unsynced");
    assert_eq!(read(&fx.b("x")), b"Y");

    // Symlinks, rmdir, and a directory larger than one readdir reply.
    std::os::unix::fs::symlink("h", fx.m("link")).unwrap();
    assert_eq!(std::fs::read_link(fx.m("link")).unwrap(), Path::new("h"));
    assert_eq!(read(&fx.m("link")), b"onetwo");
    std::fs::write(fx.m("e/k"), b"").unwrap();
    assert_eq!(std::fs::remove_dir(fx.m("e")).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
    std::fs::create_dir(fx.m("many")).unwrap();
    for i in 0..600 {
        std::fs::write(fx.m(&format!("many/file-with-a-longish-name-{i:04}")), b"").unwrap();
    }
    assert_eq!(names(fx.m("many")).len(), 600);
    std::fs::create_dir(fx.m("empty")).unwrap();
    std::fs::remove_dir(fx.m("empty")).unwrap();
    assert!(!fx.m("empty").exists() && !fx.b("empty").exists());

    // chmod and utimes reach the backing file.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(fx.m("h"), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(std::fs::metadata(fx.b("h")).unwrap().mode() & 0o777, 0o640);
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    File::options().write(true).open(fx.m("h")).unwrap().set_modified(when).unwrap();
    assert_eq!(std::fs::metadata(fx.m("h")).unwrap().modified().unwrap(), when);

    // statfs answers.
    let p = std::ffi::CString::new(fx.mount().mountpoint().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated path and a statvfs to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(p.as_ptr(), &mut st) }, 0);
    assert!(st.f_blocks > 0);
}

/// A log shaped like a WAL: records appended with write(), fdatasync every few; after a drop the file
/// must end exactly at the last synced record.
#[test]
fn a_wal_ends_at_its_last_synced_record() {
    let Some(fx) = Fixture::new("wal") else { return };
    let mut expected = Vec::new();
    let mut synced = 0usize;
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..3 {
        let mut f = OpenOptions::new().write(true).create(true).truncate(false).open(fx.m("wal")).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        assert_eq!(f.stream_position().unwrap() as usize, synced, "round {round} starts at the synced end");
        // RocksDB preallocates its logs without changing their size.
        // SAFETY: valid descriptor.
        assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, 4 << 20) }, 0);
        for i in 0..400 {
            let len = 16 + (next() % 3000) as usize;
            let mut rec = Vec::with_capacity(len + 8);
            rec.extend_from_slice(&(len as u32).to_le_bytes());
            rec.extend_from_slice(&(i as u32).to_le_bytes());
            rec.extend((0..len).map(|k| (k as u8) ^ (i as u8)));
            f.write_all(&rec).unwrap();
            expected.extend_from_slice(&rec);
            if next() % 7 == 0 {
                f.sync_data().unwrap();
                synced = expected.len();
            }
        }
        assert_eq!(read(&fx.m("wal")), expected);
        let stats = fx.mount().drop_unsynced();
        assert_eq!(stats.bytes as usize, expected.len() - synced);
        expected.truncate(synced);
        assert_eq!(std::fs::metadata(fx.m("wal")).unwrap().len() as usize, synced);
        assert_eq!(read(&fx.m("wal")), expected);
        assert_eq!(read(&fx.b("wal")), expected);
    }
}

#[test]
fn fcntl_locks_work_through_the_mount() {
    let Some(fx) = Fixture::new("lock") else { return };
    let lock = |fd: i32, cmd: i32, typ: i32| {
        // SAFETY: flock is plain data; `fd` is open.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = typ as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        let r = unsafe { libc::fcntl(fd, cmd, &mut fl) };
        (if r == -1 { std::io::Error::last_os_error().raw_os_error() } else { None }, fl)
    };
    // RocksDB's LOCK file: a process-owned write lock (F_SETLK) ...
    let a = rw(&fx.m("LOCK"));
    assert_eq!(lock(a.as_raw_fd(), libc::F_SETLK, libc::F_WRLCK).0, None);
    // ... that another open file description (an OFD lock, as another process would) cannot take.
    let b = rw(&fx.m("LOCK"));
    assert_eq!(lock(b.as_raw_fd(), libc::F_OFD_SETLK, libc::F_WRLCK).0, Some(libc::EAGAIN));
    let (err, fl) = lock(b.as_raw_fd(), libc::F_OFD_GETLK, libc::F_WRLCK);
    assert_eq!((err, fl.l_type as i32), (None, libc::F_WRLCK));
    assert_eq!(lock(a.as_raw_fd(), libc::F_SETLK, libc::F_UNLCK).0, None);
    assert_eq!(lock(b.as_raw_fd(), libc::F_OFD_SETLK, libc::F_WRLCK).0, None);
    // flock(2) works too.
    // SAFETY: valid descriptors.
    let c = rw(&fx.m("LOCK"));
    assert_eq!(unsafe { libc::flock(a.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    assert_eq!(unsafe { libc::flock(c.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, -1);
}

/// A read-only shared mapping of a file that is written with pwrite, as bbolt does: it must see the
/// writes (synced or not), and not see dropped ones afterwards.
#[test]
fn shared_read_only_mappings_see_writes() {
    let Some(fx) = Fixture::new("mmap") else { return };
    let f = rw(&fx.m("db"));
    f.write_all_at(&[b'x'; 8192], 0).unwrap();
    f.sync_data().unwrap();
    let map = |f: &File| {
        // SAFETY: mapping 8 KiB of an open file read-only; unmapped by the caller.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0) };
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        p as *const u8
    };
    // SAFETY (reads below): `p` maps 8192 readable bytes until munmap.
    let at = |p: *const u8, i: usize| unsafe { std::ptr::read_volatile(p.add(i)) };
    let p = map(&f);
    assert_eq!((at(p, 0), at(p, 8191)), (b'x', b'x'));
    f.write_all_at(b"y", 100).unwrap();
    assert_eq!(at(p, 100), b'y', "a write through the descriptor shows in the mapping");
    f.sync_data().unwrap();
    f.write_all_at(b"z", 200).unwrap();
    assert_eq!(at(p, 200), b'z');
    // SAFETY: `p` was mapped above with this length.
    unsafe { libc::munmap(p as *mut _, 8192) };

    assert_eq!(fx.mount().drop_unsynced().bytes, 1);
    let r = File::open(fx.m("db")).unwrap();
    let p = map(&r);
    assert_eq!((at(p, 100), at(p, 200)), (b'y', b'x'), "dropped data is gone from the page cache too");
    // SAFETY: as above.
    unsafe { libc::munmap(p as *mut _, 8192) };
}

#[test]
fn stale_and_busy_mounts_are_cleaned_up() {
    let Some(fx) = Fixture::new("stale") else { return };
    let mounted = |p: &Path| std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(p.to_str().unwrap());

    // A mount whose owner forgot it (as after a killed run) is found and unmounted.
    let extra = fx.base.join("extra");
    let inner = lazyfs::mount(&extra.join("b2"), &extra.join("m2")).unwrap();
    let m2 = inner.mountpoint().to_path_buf();
    std::mem::forget(inner);
    assert!(mounted(&m2));
    lazyfs::unmount_stale(&extra);
    assert!(!mounted(&m2));
    assert!(mounted(fx.mount().mountpoint()), "only mounts under the given directory");

    // Dropping a mount that is busy detaches it and aborts the connection instead of failing or hanging.
    let m3 = lazyfs::mount(&extra.join("b3"), &extra.join("m3")).unwrap();
    let mp = m3.mountpoint().to_path_buf();
    let held = rw(&mp.join("held"));
    let t = Instant::now();
    drop(m3);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!mounted(&mp));
    assert_eq!(held.metadata().unwrap_err().raw_os_error(), Some(libc::ENOTCONN));
    drop(held);
}

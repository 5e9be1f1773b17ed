//! A LazyFS-like FUSE filesystem, as etcd's robustness tests use LazyFS: it lets the harness simulate "the
//! machine crashed and lost every write that was not yet fsynced", which killing a process cannot (the
//! kernel's page cache survives a kill -9 and writes it out later).
//!
//! [`mount`] serves a backing directory at a mount point (a passthrough) on a background thread, with these
//! semantics:
//! - Data written with write() (or through a shared writable mapping) stays in memory, per inode as dirty
//!   extents over the backing file, and does not reach the backing file until fsync() or fdatasync() of that
//!   file (written, then the backing file fsynced), or a write through a file opened O_SYNC/O_DSYNC. Reads
//!   overlay the dirty extents on the backing file; getattr reports the logical size (the backing size or
//!   the end of the last dirty extent, whichever is larger).
//! - A file whose dirty data passes [`WRITEBACK_CAP`] has it written back early, without fsync: a real
//!   kernel may also write back whenever it likes, so this loses no generality, only bounds memory.
//! - [`LazyMount::drop_unsynced`] forgets all dirty data of all files: what a crash does to the page cache.
//!   Call it while nothing uses the mount (the processes on it killed), then restart them.
//! - Metadata operations (create, mkdir, unlink, rmdir, rename, link, symlink, setattr including truncate,
//!   fallocate, …) go straight to the backing directory, as LazyFS does by default: they survive a drop
//!   even unsynced. A truncate also trims the dirty extents past the new size. Unlinking the last link of a
//!   file (once it is closed) forgets its dirty data.
//! - FUSE inode numbers are the backing files' `st_ino` (the backing root's swapped with the FUSE root's),
//!   so the backing directory must be one filesystem. Every open gets `FOPEN_DIRECT_IO` and every entry and
//!   attribute a TTL of 0, so no read, write or size query is answered from the kernel's caches. Shared
//!   mappings (bbolt maps its db file) need the kernel's `FUSE_DIRECT_IO_ALLOW_MMAP` (Linux 6.6+), which
//!   `init` asks for; writes through a descriptor then invalidate the mapped pages. A kernel without it
//!   gets opens without direct I/O instead: writes still all reach this filesystem (FUSE writes through
//!   unless asked for write-back caching), but reads may come from the page cache, which is only dropped
//!   (with the attributes) by `drop_unsynced` and at each open.
//! - Locks (fcntl, flock) are not implemented here, so the kernel keeps them locally: they work between
//!   processes on this machine, which is all RocksDB's LOCK file needs.
//! - Requests are served by one thread; an fsync blocks the mount while the backing file syncs. Extended
//!   attributes, copy_file_range and the like answer ENOSYS (the kernel then falls back or gives up).
//! - Not modelled: lost metadata (a crash here never undoes a create or rename, synced or not), torn or
//!   reordered writes within the unsynced data (all of it goes, none of it half), and the backing
//!   filesystem reusing an inode number while the kernel still caches the old inode.
//! - Processes started after the mount in another mount namespace (`ip netns exec`) see it too. Stop them
//!   before dropping the [`LazyMount`]: unmounting detaches a busy mount and then aborts its connection.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, MountOption, Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, Request, Session,
    SessionACL, SessionUnmounter, TimeOrNow, WriteFlags,
};

/// Dirty bytes one file may hold before they are written back (without fsync), bounding memory.
pub const WRITEBACK_CAP: u64 = 64 << 20;

/// Entries and attributes are not cached by the kernel: sizes change under it when dirty data is dropped.
const TTL: Duration = Duration::ZERO;

/// Why a mount could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LazyFsError {
    #[error("cannot create or open {path}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("mount point {mountpoint} and backing directory {backing} must not contain one another")]
    Nested { backing: PathBuf, mountpoint: PathBuf },
    #[error("cannot mount a FUSE filesystem at {mountpoint} (needs root and /dev/fuse)")]
    Mount { mountpoint: PathBuf, source: io::Error },
    #[error("cannot start the thread serving {mountpoint}")]
    Thread { mountpoint: PathBuf, source: io::Error },
}

/// What [`LazyMount::drop_unsynced`] forgot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropStats {
    /// Files that had unsynced data.
    pub files: u64,
    /// Unsynced bytes forgotten (the dirty extents' lengths, overwrites counted once).
    pub bytes: u64,
}

/// The filesystem served by a [`LazyMount`]: a passthrough to the backing directory that keeps written
/// data in memory until it is fsynced.
pub struct LazyFs {
    inner: Arc<Inner>,
}

struct Inner {
    /// The backing directory, canonical.
    root: PathBuf,
    /// Its `st_ino`, which FUSE calls 1 (and backing inode 1, if any, takes its number).
    root_ino: u64,
    /// Opens get `FOPEN_DIRECT_IO` (the kernel lets direct-I/O files be mapped shared).
    direct_io: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Backing inode → its known paths (hard links may give several), kept current by every operation
    /// that names or renames a file.
    paths: HashMap<u64, Vec<PathBuf>>,
    /// Backing inode → data written but not yet written back.
    dirty: HashMap<u64, Dirty>,
    handles: HashMap<u64, Handle>,
    /// Backing inode → how many handles are open on it.
    open: HashMap<u64, usize>,
    next_fh: u64,
}

struct Handle {
    ino: u64,
    file: Arc<File>,
    /// Whether `file` was opened for writing (write-back through a read-only one reopens it).
    writable: bool,
    /// Opened O_SYNC or O_DSYNC: every write is written back and synced at once.
    sync: bool,
    /// A directory's entries (name, kind, FUSE inode), read at opendir.
    entries: Vec<(OsString, FileType, u64)>,
}

/// One file's unsynced data: disjoint extents by start offset.
#[derive(Default)]
struct Dirty {
    extents: BTreeMap<u64, Vec<u8>>,
    bytes: u64,
    /// When it was last written, reported as mtime (the backing file's only changes at write-back).
    mtime: Option<SystemTime>,
}

impl Dirty {
    /// Where the last extent ends.
    fn end(&self) -> u64 {
        self.extents.iter().next_back().map_or(0, |(s, v)| s + v.len() as u64)
    }

    /// Records a write. An extent that covers or reaches `off` grows in place, so appending to a file costs
    /// the appended bytes only; extents the write overlaps are absorbed.
    fn write(&mut self, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = off + data.len() as u64;
        let left = self.extents.range(..=off).next_back().filter(|(s, v)| *s + v.len() as u64 >= off).map(|(s, _)| *s);
        let (start, mut buf) = match left {
            Some(s) => {
                let v = self.extents.get_mut(&s).expect("extent just found");
                if s + v.len() as u64 >= end {
                    v[(off - s) as usize..(end - s) as usize].copy_from_slice(data);
                    return;
                }
                let mut v = self.extents.remove(&s).expect("extent just found");
                self.bytes -= v.len() as u64;
                v.truncate((off - s) as usize);
                v.extend_from_slice(data);
                (s, v)
            }
            None => (off, data.to_vec()),
        };
        while let Some(s) = self.extents.range(off + 1..end).next().map(|(s, _)| *s) {
            let v = self.extents.remove(&s).expect("extent just found");
            self.bytes -= v.len() as u64;
            if s + v.len() as u64 > end {
                buf.extend_from_slice(&v[(end - s) as usize..]);
            }
        }
        self.bytes += buf.len() as u64;
        self.extents.insert(start, buf);
    }

    /// Copies the dirty bytes that fall in `[off, off + buf.len())` over `buf`.
    fn overlay(&self, off: u64, buf: &mut [u8]) {
        let end = off + buf.len() as u64;
        let first = self.extents.range(..=off).next_back().map_or(off, |(s, _)| *s);
        for (&s, v) in self.extents.range(first..end) {
            let (lo, hi) = (s.max(off), (s + v.len() as u64).min(end));
            if lo < hi {
                buf[(lo - off) as usize..(hi - off) as usize].copy_from_slice(&v[(lo - s) as usize..(hi - s) as usize]);
            }
        }
    }

    /// Forgets what lies at or past `size`.
    fn truncate(&mut self, size: u64) {
        for v in self.extents.split_off(&size).into_values() {
            self.bytes -= v.len() as u64;
        }
        if let Some((s, v)) = self.extents.iter_mut().next_back() {
            if s + v.len() as u64 > size {
                self.bytes -= s + v.len() as u64 - size;
                v.truncate((size - s) as usize);
            }
        }
    }
}

/// A mounted [`LazyFs`]; unmounted (detached if still busy) when dropped.
pub struct LazyMount {
    inner: Arc<Inner>,
    mountpoint: PathBuf,
    notifier: Notifier,
    unmounter: Option<SessionUnmounter>,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// The connection's number under /sys/fs/fuse/connections, to abort it if unmounting leaves it busy.
    conn: Option<u32>,
}

/// Mounts a [`LazyFs`] over `backing` at `mountpoint` (both created if missing) and serves it on a
/// background thread. Needs root (mount(2) on /dev/fuse).
pub fn mount(backing: &Path, mountpoint: &Path) -> Result<LazyMount, LazyFsError> {
    let dir_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LazyFsError::Dir { path, source }
    };
    if std::fs::metadata(mountpoint).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN)) {
        unmount_stale(mountpoint);
    }
    std::fs::create_dir_all(backing).map_err(dir_err(backing))?;
    std::fs::create_dir_all(mountpoint).map_err(dir_err(mountpoint))?;
    let root = backing.canonicalize().map_err(dir_err(backing))?;
    let mountpoint = mountpoint.canonicalize().map_err(dir_err(mountpoint))?;
    if mountpoint.starts_with(&root) || root.starts_with(&mountpoint) {
        return Err(LazyFsError::Nested { backing: root, mountpoint });
    }
    let root_ino = std::fs::metadata(&root).map_err(dir_err(&root))?.ino();
    let mut state = State { next_fh: 1, ..State::default() };
    state.paths.insert(root_ino, vec![root.clone()]);
    let inner = Arc::new(Inner { root, root_ino, direct_io: AtomicBool::new(false), state: Mutex::new(state) });

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("keel-lazyfs".into()),
        MountOption::Subtype("keel-lazyfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    config.acl = SessionACL::All;
    let mount_err = |source| LazyFsError::Mount { mountpoint: mountpoint.clone(), source };
    let mut session = Session::new(LazyFs { inner: inner.clone() }, &mountpoint, &config).map_err(mount_err)?;
    let notifier = session.notifier();
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new()
        .name("lazyfs".into())
        .spawn(move || session.run())
        .map_err(|source| LazyFsError::Thread { mountpoint: mountpoint.clone(), source })?;
    let conn = std::fs::metadata(&mountpoint).ok().filter(|m| libc::major(m.dev()) == 0).map(|m| libc::minor(m.dev()));
    Ok(LazyMount { inner, mountpoint, notifier, unmounter: Some(unmounter), thread: Some(thread), conn })
}

impl LazyMount {
    /// Forgets every file's unsynced data, as a machine crash would, and drops the kernel's cached pages
    /// and attributes of those files.
    pub fn drop_unsynced(&self) -> DropStats {
        let dropped = std::mem::take(&mut self.inner.lock().dirty);
        let stats = DropStats {
            files: dropped.values().filter(|d| d.bytes > 0).count() as u64,
            bytes: dropped.values().map(|d| d.bytes).sum(),
        };
        for ino in dropped.keys() {
            // ENOENT when the kernel holds no such inode (nothing cached): fine.
            let _ = self.notifier.inval_inode(INodeNo(self.inner.swap_ino(*ino)), 0, 0);
        }
        stats
    }

    /// Where the filesystem is mounted (canonical).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing directory (canonical).
    pub fn backing(&self) -> &Path {
        &self.inner.root
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        let busy = match self.unmounter.take().map(|mut u| u.unmount()) {
            Some(Err(e)) => {
                let _ = umount2(&self.mountpoint, libc::MNT_DETACH);
                e.raw_os_error() == Some(libc::EBUSY)
            }
            _ => false,
        };
        let Some(thread) = self.thread.take() else { return };
        // Unmounted, the connection ends and the thread with it. Detached while busy (or still mounted in
        // another mount namespace), it would serve until the last user went away: after a grace period the
        // connection is aborted, failing whatever still uses it.
        let grace = if busy { Duration::from_millis(500) } else { Duration::from_secs(2) };
        let mut done = wait_finished(&thread, grace);
        if let (false, Some(conn)) = (done, self.conn) {
            let _ = abort_connection(conn);
            done = wait_finished(&thread, Duration::from_secs(2));
        }
        if done {
            let _ = thread.join();
        }
    }
}

/// Aborts FUSE connection `conn` through fusectl, mounted for the purpose where the system has not.
fn abort_connection(conn: u32) -> io::Result<()> {
    let abort = |dir: &Path| std::fs::write(dir.join(format!("{conn}/abort")), "1");
    let sys = Path::new("/sys/fs/fuse/connections");
    if sys.join(conn.to_string()).exists() {
        return abort(sys);
    }
    let dir = std::env::temp_dir().join(format!("keel-lazyfs-ctl-{}-{conn}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let r = cpath(&dir).and_then(|target| {
        // SAFETY: NUL-terminated source, target and type; fusectl takes no data.
        cvt(unsafe { libc::mount(c"fusectl".as_ptr(), target.as_ptr(), c"fusectl".as_ptr(), 0, std::ptr::null()) })?;
        let r = abort(&dir);
        let _ = umount2(&dir, libc::MNT_DETACH);
        r
    });
    let _ = std::fs::remove_dir(&dir);
    r
}

fn wait_finished<T>(thread: &JoinHandle<T>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Unmounts every FUSE mount (per /proc/self/mountinfo) at or under `under`: those left by runs killed
/// before they cleaned up, whose mount points otherwise answer ENOTCONN. Deepest first; detached if busy.
pub fn unmount_stale(under: &Path) {
    let under = under.canonicalize().unwrap_or_else(|_| under.to_path_buf());
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut stale: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            let fstype = rest.split(' ').next()?;
            let mountpoint = unescape_mountinfo(fields.split(' ').nth(4)?);
            (fstype == "fuse" || fstype.starts_with("fuse.")).then_some(mountpoint)
        })
        .filter(|m| m.starts_with(&under))
        .collect();
    stale.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for m in stale {
        if umount2(&m, 0).is_err() {
            let _ = umount2(&m, libc::MNT_DETACH);
        }
    }
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cvt(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn umount2(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: `p` is a valid NUL-terminated string for the duration of the call.
    cvt(unsafe { libc::umount2(p.as_ptr(), flags) })
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        Some(TimeOrNow::Now) => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as _ },
            Err(e) => {
                let (secs, nanos) =
                    (e.duration().as_secs() as libc::time_t, e.duration().subsec_nanos() as libc::c_long);
                match nanos {
                    0 => libc::timespec { tv_sec: -secs, tv_nsec: 0 },
                    _ => libc::timespec { tv_sec: -secs - 1, tv_nsec: 1_000_000_000 - nanos },
                }
            }
        },
    }
}

/// Opens a backing file for a FUSE open or create: read-write when allowed (so write-back can use it),
/// without O_APPEND (pwrite on an O_APPEND descriptor appends, whatever the offset) nor the flags this
/// filesystem implements itself.
fn open_backing(path: &Path, flags: i32, create_mode: Option<u32>) -> io::Result<(File, bool)> {
    let strip = libc::O_ACCMODE | libc::O_APPEND | libc::O_DIRECT | libc::O_SYNC | libc::O_DSYNC | libc::O_CREAT;
    let open = |acc: i32| {
        let mut o = std::fs::OpenOptions::new();
        o.read(acc != libc::O_WRONLY).write(acc != libc::O_RDONLY).custom_flags(flags & !strip);
        if let Some(mode) = create_mode {
            o.create(true).mode(mode);
        }
        o.open(path)
    };
    match open(libc::O_RDWR) {
        Ok(f) => Ok((f, true)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS | libc::ETXTBSY | libc::EPERM)) => {
            let acc = flags & libc::O_ACCMODE;
            open(acc).map(|f| (f, acc != libc::O_RDONLY))
        }
        Err(e) => Err(e),
    }
}

/// Writes `dirty` back through `file` (no sync).
fn write_back(file: &File, dirty: &Dirty) -> io::Result<()> {
    for (&s, v) in &dirty.extents {
        file.write_all_at(v, s)?;
    }
    Ok(())
}

/// A reply that carries an error.
trait ReplyErr {
    fn err(self, e: Errno);
}
macro_rules! reply_err {
    ($($t:ty),*) => {$(impl ReplyErr for $t { fn err(self, e: Errno) { self.error(e) } })*};
}
reply_err!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyEmpty,
    ReplyEntry,
    ReplyLseek,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite
);

/// Replies with `f`'s value or its error.
fn answer<R: ReplyErr, T>(reply: R, r: Result<T, Errno>, f: impl FnOnce(R, T)) {
    match r {
        Ok(v) => f(reply, v),
        Err(e) => reply.err(e),
    }
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open_flags(&self) -> FopenFlags {
        if self.direct_io.load(Ordering::Relaxed) {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::empty()
        }
    }

    /// Backing inode ↔ FUSE inode: the backing root and inode 1 trade numbers (a swap, its own inverse).
    fn swap_ino(&self, ino: u64) -> u64 {
        if ino == self.root_ino {
            1
        } else if ino == 1 {
            self.root_ino
        } else {
            ino
        }
    }

    fn attr(&self, md: &Metadata, dirty: Option<&Dirty>) -> FileAttr {
        let mut size = md.size();
        let mut mtime = time(md.mtime(), md.mtime_nsec());
        let mut ctime = time(md.ctime(), md.ctime_nsec());
        if let Some(d) = dirty {
            size = size.max(d.end());
            if let Some(t) = d.mtime.filter(|t| *t > mtime) {
                (mtime, ctime) = (t, ctime.max(t));
            }
        }
        FileAttr {
            ino: INodeNo(self.swap_ino(md.ino())),
            size,
            blocks: md.blocks(),
            atime: time(md.atime(), md.atime_nsec()),
            mtime,
            ctime,
            crtime: UNIX_EPOCH,
            kind: kind(md.mode()),
            perm: (md.mode() & 0o7777) as u16,
            nlink: md.nlink() as u32,
            uid: md.uid(),
            gid: md.gid(),
            rdev: md.rdev() as u32,
            blksize: md.blksize() as u32,
            flags: 0,
        }
    }

    /// A path of FUSE inode `ino`, unchecked (for parents of the names an operation acts on).
    fn path(&self, st: &State, ino: INodeNo) -> Result<PathBuf, Errno> {
        let ino = self.swap_ino(ino.0);
        st.paths.get(&ino).and_then(|p| p.first()).cloned().ok_or(Errno::ENOENT)
    }

    /// A path that still names backing inode `ino`, with its metadata; paths that name something else now
    /// are forgotten.
    fn live_path(&self, st: &mut State, ino: u64) -> Result<(PathBuf, Metadata), Errno> {
        let paths = st.paths.get_mut(&ino).ok_or(Errno::ENOENT)?;
        while let Some(p) = paths.first() {
            match std::fs::symlink_metadata(p) {
                Ok(md) if md.ino() == ino => return Ok((p.clone(), md)),
                _ => {
                    paths.remove(0);
                }
            }
        }
        Err(Errno::ENOENT)
    }

    fn remember(st: &mut State, ino: u64, path: PathBuf) {
        let paths = st.paths.entry(ino).or_default();
        if !paths.contains(&path) {
            paths.push(path);
        }
    }

    /// After `path` (of backing inode `ino`, which had `nlink` links) was removed: forgets the path, and
    /// the inode with its dirty data if that was its last link and nothing has it open.
    fn removed(st: &mut State, ino: u64, path: &Path, nlink: u64, dir: bool) {
        if dir || nlink <= 1 {
            st.paths.remove(&ino);
            if !st.open.contains_key(&ino) {
                st.dirty.remove(&ino);
            }
        } else if let Some(paths) = st.paths.get_mut(&ino) {
            paths.retain(|p| p != path);
        }
    }

    /// Looks `path` up and replies with its entry, remembering the path.
    fn entry(&self, path: PathBuf) -> Result<FileAttr, Errno> {
        let md = std::fs::symlink_metadata(&path).map_err(errno)?;
        let mut st = self.lock();
        Self::remember(&mut st, md.ino(), path);
        Ok(self.attr(&md, st.dirty.get(&md.ino())))
    }

    fn add_handle(&self, st: &mut State, ino: u64, file: File, writable: bool, sync: bool) -> u64 {
        let fh = st.next_fh;
        st.next_fh += 1;
        let h = Handle { ino, file: Arc::new(file), writable, sync, entries: Vec::new() };
        st.handles.insert(fh, h);
        *st.open.entry(ino).or_default() += 1;
        fh
    }

    /// Writes backing inode's dirty data back through handle `fh` (no sync); kept dirty if that fails.
    fn flush_dirty(&self, st: &mut State, fh: u64) -> Result<(), Errno> {
        let h = st.handles.get(&fh).ok_or(Errno::EBADF)?;
        let ino = h.ino;
        let Some(dirty) = st.dirty.remove(&ino) else { return Ok(()) };
        let file = if h.writable {
            h.file.clone()
        } else {
            let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&*h.file));
            match std::fs::OpenOptions::new().write(true).open(proc) {
                Ok(f) => Arc::new(f),
                Err(e) => {
                    st.dirty.insert(ino, dirty);
                    return Err(errno(e));
                }
            }
        };
        if let Err(e) = write_back(&file, &dirty) {
            st.dirty.insert(ino, dirty);
            return Err(errno(e));
        }
        Ok(())
    }

    /// Writes back handle `fh`'s file and syncs it; the sync runs unlocked.
    fn sync(&self, fh: u64, datasync: bool) -> Result<(), Errno> {
        let file = {
            let mut st = self.lock();
            self.flush_dirty(&mut st, fh)?;
            st.handles[&fh].file.clone()
        };
        if datasync { file.sync_data() } else { file.sync_all() }.map_err(errno)
    }

    fn handle_file(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        self.lock().handles.get(&fh.0).map(|h| h.file.clone()).ok_or(Errno::EBADF)
    }

    fn getattr(&self, ino: INodeNo, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        let ino = self.swap_ino(ino.0);
        let mut st = self.lock();
        let md = match fh.and_then(|fh| st.handles.get(&fh.0)) {
            Some(h) => h.file.metadata().map_err(errno)?,
            None => self.live_path(&mut st, ino)?.1,
        };
        Ok(self.attr(&md, st.dirty.get(&ino)))
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let ino = self.swap_ino(ino.0);
        let mut st = self.lock();
        let file = fh.and_then(|fh| st.handles.get(&fh.0)).map(|h| h.file.clone());
        let path = match &file {
            Some(_) => None,
            None => Some(cpath(&self.live_path(&mut st, ino)?.0).map_err(errno)?),
        };
        let fd = file.as_ref().map(|f| std::os::fd::AsRawFd::as_raw_fd(&**f));
        // SAFETY (all calls below): `fd` is an open descriptor held by `file`, `p` a NUL-terminated path,
        // and `times` two valid timespecs.
        if let Some(mode) = mode {
            cvt(match (fd, &path) {
                (Some(fd), _) => unsafe { libc::fchmod(fd, mode & 0o7777) },
                (None, Some(p)) => unsafe { libc::chmod(p.as_ptr(), mode & 0o7777) },
                _ => unreachable!(),
            })
            .map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
            cvt(match (fd, &path) {
                (Some(fd), _) => unsafe { libc::fchown(fd, u, g) },
                (None, Some(p)) => unsafe { libc::lchown(p.as_ptr(), u, g) },
                _ => unreachable!(),
            })
            .map_err(errno)?;
        }
        if let Some(size) = size {
            cvt(match (fd, &path) {
                (Some(fd), _) => unsafe { libc::ftruncate(fd, size as libc::off_t) },
                (None, Some(p)) => unsafe { libc::truncate(p.as_ptr(), size as libc::off_t) },
                _ => unreachable!(),
            })
            .map_err(errno)?;
            if let Some(d) = st.dirty.get_mut(&ino) {
                d.truncate(size);
                d.mtime = Some(SystemTime::now());
            }
        }
        if atime.is_some() || mtime.is_some() {
            let times = [timespec(atime), timespec(mtime)];
            cvt(match (fd, &path) {
                (Some(fd), _) => unsafe { libc::futimens(fd, times.as_ptr()) },
                (None, Some(p)) => unsafe {
                    libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
                },
                _ => unreachable!(),
            })
            .map_err(errno)?;
            if mtime.is_some() {
                if let Some(d) = st.dirty.get_mut(&ino) {
                    d.mtime = None;
                }
            }
        }
        let md = match (&file, &path) {
            (Some(f), _) => f.metadata(),
            (None, Some(p)) => std::fs::symlink_metadata(OsStr::from_bytes(p.as_bytes())),
            _ => unreachable!(),
        }
        .map_err(errno)?;
        Ok(self.attr(&md, st.dirty.get(&ino)))
    }

    fn rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        let (old, new) = {
            let st = self.lock();
            (self.path(&st, parent)?.join(name), self.path(&st, newparent)?.join(newname))
        };
        let from = std::fs::symlink_metadata(&old).map_err(errno)?;
        let to = std::fs::symlink_metadata(&new).ok();
        let (o, n) = (cpath(&old).map_err(errno)?, cpath(&new).map_err(errno)?);
        // SAFETY: both are NUL-terminated paths.
        cvt(unsafe { libc::renameat2(libc::AT_FDCWD, o.as_ptr(), libc::AT_FDCWD, n.as_ptr(), flags) })
            .map_err(errno)?;
        if to.as_ref().is_some_and(|t| t.ino() == from.ino()) {
            return Ok(()); // two links of one file: rename does nothing
        }
        let mut st = self.lock();
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if let (Some(to), false) = (&to, exchange) {
            Self::removed(&mut st, to.ino(), &new, to.nlink(), to.is_dir());
        }
        let moved = |p: &Path| -> Option<PathBuf> {
            if let Ok(rest) = p.strip_prefix(&old) {
                Some(if rest.as_os_str().is_empty() { new.clone() } else { new.join(rest) })
            } else if exchange {
                p.strip_prefix(&new)
                    .ok()
                    .map(|rest| if rest.as_os_str().is_empty() { old.clone() } else { old.join(rest) })
            } else {
                None
            }
        };
        if from.is_dir() || to.as_ref().is_some_and(|t| exchange && t.is_dir()) {
            for paths in st.paths.values_mut() {
                for p in paths.iter_mut() {
                    if let Some(m) = moved(p) {
                        *p = m;
                    }
                }
            }
        } else {
            for ino in [Some(from.ino()), to.as_ref().filter(|_| exchange).map(|t| t.ino())].into_iter().flatten() {
                if let Some(paths) = st.paths.get_mut(&ino) {
                    for p in paths.iter_mut() {
                        if let Some(m) = moved(p) {
                            *p = m;
                        }
                    }
                }
            }
        }
        Self::remember(&mut st, from.ino(), new);
        Ok(())
    }

    fn opendir(&self, ino: INodeNo) -> Result<u64, Errno> {
        let bino = self.swap_ino(ino.0);
        let path = {
            let mut st = self.lock();
            self.live_path(&mut st, bino)?.0
        };
        let dir = File::open(&path).map_err(errno)?;
        let parent = if bino == self.root_ino {
            1
        } else {
            path.parent().and_then(|p| std::fs::metadata(p).ok()).map_or(1, |m| self.swap_ino(m.ino()))
        };
        let mut entries =
            vec![(OsString::from("."), FileType::Directory, ino.0), ("..".into(), FileType::Directory, parent)];
        for e in std::fs::read_dir(&path).map_err(errno)? {
            let e = e.map_err(errno)?;
            let kind = match e.file_type() {
                Ok(t) => FileType::from_std(t).unwrap_or(FileType::RegularFile),
                Err(_) => continue, // gone since
            };
            entries.push((e.file_name(), kind, self.swap_ino(e.ino())));
        }
        let mut st = self.lock();
        let fh = self.add_handle(&mut st, bino, dir, false, false);
        st.handles.get_mut(&fh).expect("handle just added").entries = entries;
        Ok(fh)
    }

    fn read(&self, fh: FileHandle, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let st = self.lock();
        let h = st.handles.get(&fh.0).ok_or(Errno::EBADF)?;
        let mut buf = vec![0u8; size as usize];
        let mut n = 0;
        while n < buf.len() {
            match h.file.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(errno(e)),
            }
        }
        if let Some(d) = st.dirty.get(&h.ino) {
            let end = d.end();
            if end > offset + n as u64 {
                n = (end - offset).min(buf.len() as u64) as usize;
            }
            d.overlay(offset, &mut buf[..n]);
        }
        buf.truncate(n);
        Ok(buf)
    }

    fn write(&self, fh: FileHandle, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let sync = {
            let mut st = self.lock();
            let h = st.handles.get(&fh.0).ok_or(Errno::EBADF)?;
            let (ino, sync) = (h.ino, h.sync);
            let d = st.dirty.entry(ino).or_default();
            d.write(offset, data);
            d.mtime = Some(SystemTime::now());
            if d.bytes > WRITEBACK_CAP {
                self.flush_dirty(&mut st, fh.0)?;
            }
            sync
        };
        if sync {
            self.sync(fh.0, true)?;
        }
        Ok(data.len() as u32)
    }

    fn release(&self, fh: FileHandle) {
        let mut st = self.lock();
        let Some(h) = st.handles.remove(&fh.0) else { return };
        let last = match st.open.get_mut(&h.ino) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                st.open.remove(&h.ino);
                true
            }
        };
        if last && h.file.metadata().is_ok_and(|m| m.nlink() == 0) {
            st.dirty.remove(&h.ino);
            st.paths.remove(&h.ino);
        }
    }

    fn size(&self, fh: FileHandle) -> Result<u64, Errno> {
        let st = self.lock();
        let h = st.handles.get(&fh.0).ok_or(Errno::EBADF)?;
        let size = h.file.metadata().map_err(errno)?.size();
        Ok(size.max(st.dirty.get(&h.ino).map_or(0, Dirty::end)))
    }
}

impl LazyFs {
    /// unlink (a file) or rmdir (`dir`), forgetting the inode's path and, with its last link, its dirty data.
    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let path = self.inner.path(&self.inner.lock(), parent)?.join(name);
        let md = std::fs::symlink_metadata(&path).map_err(errno)?;
        if dir { std::fs::remove_dir(&path) } else { std::fs::remove_file(&path) }.map_err(errno)?;
        Inner::removed(&mut self.inner.lock(), md.ino(), &path, md.nlink(), dir);
        Ok(())
    }

    fn create_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        make: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<FileAttr, Errno> {
        let path = self.inner.path(&self.inner.lock(), parent)?.join(name);
        make(&path).map_err(errno)?;
        self.inner.entry(path)
    }
}

impl Filesystem for LazyFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Without it the kernel refuses shared mappings of direct-I/O files (bbolt maps its db file).
        let mmap = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP).is_ok();
        self.inner.direct_io.store(mmap, Ordering::Relaxed);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent = self.inner.path(&self.inner.lock(), parent);
        let r = parent.and_then(|p| self.inner.entry(p.join(name)));
        answer(reply, r, |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        answer(reply, self.inner.getattr(ino, fh), |r, a| r.attr(&TTL, &a));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.inner.setattr(ino, mode, uid, gid, size, atime, mtime, fh);
        answer(reply, r, |r, a| r.attr(&TTL, &a));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let ino = self.inner.swap_ino(ino.0);
        let r =
            self.inner.live_path(&mut self.inner.lock(), ino).and_then(|(p, _)| std::fs::read_link(p).map_err(errno));
        answer(reply, r, |r, t| r.data(t.as_os_str().as_bytes()));
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self.create_entry(parent, name, |p| {
            let p = cpath(p)?;
            // SAFETY: `p` is a NUL-terminated path.
            cvt(unsafe { libc::mknod(p.as_ptr(), mode, rdev as libc::dev_t) })
        });
        answer(reply, r, |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        let r = self.create_entry(parent, name, |p| std::fs::DirBuilder::new().mode(mode).create(p));
        answer(reply, r, |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(reply, self.remove(parent, name, false), |r, ()| r.ok());
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(reply, self.remove(parent, name, true), |r, ()| r.ok());
    }

    fn symlink(&self, _req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let r = self.create_entry(parent, link_name, |p| std::os::unix::fs::symlink(target, p));
        answer(reply, r, |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        answer(reply, self.inner.rename(parent, name, newparent, newname, flags.bits()), |r, ()| r.ok());
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let ino = self.inner.swap_ino(ino.0);
        let r = (|| {
            let (src, dst) = {
                let mut st = self.inner.lock();
                (self.inner.live_path(&mut st, ino)?.0, self.inner.path(&st, newparent)?.join(newname))
            };
            std::fs::hard_link(src, &dst).map_err(errno)?;
            self.inner.entry(dst)
        })();
        answer(reply, r, |r, a| r.entry(&TTL, &a, Generation(0)));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let ino = self.inner.swap_ino(ino.0);
        let r = (|| {
            let path = {
                let mut st = self.inner.lock();
                match self.inner.live_path(&mut st, ino) {
                    Ok((p, _)) => p,
                    // Unlinked but still open: reopen through a descriptor we hold.
                    Err(e) => match st.handles.values().find(|h| h.ino == ino) {
                        Some(h) => format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&*h.file)).into(),
                        None => return Err(e),
                    },
                }
            };
            let (file, writable) = open_backing(&path, flags.0, None).map_err(errno)?;
            let sync = flags.0 & (libc::O_SYNC | libc::O_DSYNC) != 0;
            Ok(self.inner.add_handle(&mut self.inner.lock(), ino, file, writable, sync))
        })();
        answer(reply, r, |r, fh| r.opened(FileHandle(fh), self.inner.open_flags()));
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        answer(reply, self.inner.read(fh, offset, size), |r, d| r.data(&d));
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        answer(reply, self.inner.write(fh, offset, data), |r, n| r.written(n));
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.inner.release(fh);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        answer(reply, self.inner.sync(fh.0, datasync), |r, ()| r.ok());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        answer(reply, self.inner.opendir(ino), |r, fh| r.opened(FileHandle(fh), FopenFlags::empty()));
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let st = self.inner.lock();
        let Some(h) = st.handles.get(&fh.0) else { return reply.error(Errno::EBADF) };
        for (i, (name, kind, ino)) in h.entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.inner.release(fh);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let r =
            self.inner.handle_file(fh).and_then(|f| if datasync { f.sync_data() } else { f.sync_all() }.map_err(errno));
        answer(reply, r, |r, ()| r.ok());
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let r = (|| {
            let p = cpath(&self.inner.root)?;
            // SAFETY: `p` is a NUL-terminated path and `s` a statvfs the call fills in.
            let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
            cvt(unsafe { libc::statvfs(p.as_ptr(), &mut s) })?;
            Ok(s)
        })()
        .map_err(errno);
        answer(reply, r, |r, s| {
            r.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            )
        });
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let ino = self.inner.swap_ino(ino.0);
        let r = self.inner.live_path(&mut self.inner.lock(), ino).and_then(|(p, _)| {
            let p = cpath(&p).map_err(errno)?;
            // SAFETY: `p` is a NUL-terminated path.
            cvt(unsafe { libc::access(p.as_ptr(), mask.bits()) }).map_err(errno)
        });
        answer(reply, r, |r, ()| r.ok());
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = (|| {
            let path = self.inner.path(&self.inner.lock(), parent)?.join(name);
            let (file, writable) = open_backing(&path, flags, Some(mode)).map_err(errno)?;
            let md = file.metadata().map_err(errno)?;
            let mut st = self.inner.lock();
            Inner::remember(&mut st, md.ino(), path);
            if flags & libc::O_TRUNC != 0 {
                st.dirty.remove(&md.ino());
            }
            let attr = self.inner.attr(&md, st.dirty.get(&md.ino()));
            let sync = flags & (libc::O_SYNC | libc::O_DSYNC) != 0;
            Ok((attr, self.inner.add_handle(&mut st, md.ino(), file, writable, sync)))
        })();
        answer(reply, r, |r, (a, fh)| r.created(&TTL, &a, Generation(0), FileHandle(fh), self.inner.open_flags()));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let mut st = self.inner.lock();
            // Modes that change data (punching, zeroing, shifting) act on the written-back file.
            if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
                self.inner.flush_dirty(&mut st, fh.0)?;
            }
            let file = st.handles.get(&fh.0).ok_or(Errno::EBADF)?.file.clone();
            drop(st);
            let fd = std::os::fd::AsRawFd::as_raw_fd(&*file);
            // SAFETY: `fd` is an open descriptor held by `file`.
            cvt(unsafe { libc::fallocate(fd, mode, offset as libc::off_t, length as libc::off_t) }).map_err(errno)
        })();
        answer(reply, r, |r, ()| r.ok());
    }

    fn lseek(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        // The kernel handles SEEK_SET/CUR/END; SEEK_DATA/HOLE see the file as all data (no holes).
        let r = match whence {
            libc::SEEK_DATA | libc::SEEK_HOLE => self.inner.size(fh).and_then(|size| match offset {
                _ if offset < 0 || offset as u64 >= size => Err(Errno::ENXIO),
                _ if whence == libc::SEEK_DATA => Ok(offset),
                _ => Ok(size as i64),
            }),
            _ => Err(Errno::EINVAL),
        };
        answer(reply, r, |r, o| r.offset(o));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const _: () = {
        const fn send_sync<T: Send + Sync>() {}
        send_sync::<LazyMount>();
    };

    /// Random writes and truncates against a flat model: reads overlaid on zeros must agree, extents must
    /// stay disjoint and non-empty, and `bytes` must be their total length.
    #[test]
    fn dirty_extents_match_a_flat_model() {
        let mut seed = 0x2545f4914f6cdd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..200 {
            let (mut d, mut model, mut written) = (Dirty::default(), Vec::<u8>::new(), Vec::<bool>::new());
            for step in 0..60 {
                if next(10) == 0 {
                    let size = next(300) as usize;
                    d.truncate(size as u64);
                    model.truncate(size);
                    written.truncate(size);
                } else {
                    let (off, len) = (next(256) as usize, 1 + next(64) as usize);
                    let data: Vec<u8> = (0..len).map(|_| 1 + next(255) as u8).collect();
                    d.write(off as u64, &data);
                    if model.len() < off + len {
                        model.resize(off + len, 0);
                        written.resize(off + len, false);
                    }
                    model[off..off + len].copy_from_slice(&data);
                    written[off..off + len].fill(true);
                }
                let ctx = format!("round {round} step {step}");
                let mut buf = vec![0u8; model.len() + 8];
                d.overlay(0, &mut buf);
                assert_eq!(&buf[..model.len()], &model[..], "{ctx}");
                let last_written = written.iter().rposition(|w| *w).map_or(0, |i| i + 1);
                assert_eq!(d.end() as usize, last_written, "{ctx}");
                assert_eq!(d.bytes as usize, written.iter().filter(|w| **w).count(), "{ctx}");
                let mut prev_end = 0;
                for (&s, v) in &d.extents {
                    assert!(!v.is_empty() && s >= prev_end, "{ctx}: extents overlap or are empty");
                    prev_end = s + v.len() as u64;
                }
                let (off, len) = (next(300), next(100) as usize);
                let mut part = vec![0u8; len];
                d.overlay(off, &mut part);
                let want: Vec<u8> = (0..len).map(|i| model.get(off as usize + i).copied().unwrap_or(0)).collect();
                assert_eq!(part, want, "{ctx}: overlay at {off}+{len}");
            }
        }
    }

    /// Appending in small pieces grows one extent in place.
    #[test]
    fn appends_grow_one_extent() {
        let mut d = Dirty::default();
        for i in 0..10_000u64 {
            d.write(i * 10, &[7; 10]);
        }
        assert_eq!((d.extents.len(), d.bytes, d.end()), (1, 100_000, 100_000));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b\011c\134"), Path::new("/tmp/a b\tc\\"));
    }
}

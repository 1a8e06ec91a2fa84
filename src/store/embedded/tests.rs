//! The embedded store's tests: conformance, WAL replay (torn and damaged segments), the bounded watch history,
//! reopen and compaction.

use super::*;

#[tokio::test]
async fn embedded_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store: crate::store::DynStore = Arc::new(Embedded::open(&dir.path().join("db")).unwrap());
    crate::store::conformance::run(store).await;
}

#[tokio::test]
async fn the_wal_alone_restores_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let s = Embedded::open(&path).unwrap();
    for i in 0..50 {
        s.create(&format!("/w/{i}"), format!("{i}").into_bytes())
            .await
            .unwrap();
    }
    s.delete("/w/7", 0).await.unwrap();
    let rev = s.revision().await.unwrap();
    // A crash now: the checkpoint (redb) is older than the WAL. Copy both files as they are on disk.
    let crash = tempfile::tempdir().unwrap();
    std::fs::copy(&path, crash.path().join("db")).unwrap();
    let segs = segments(&path);
    let logged: u64 = segs
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(logged > 0, "writes are in the WAL");
    for (_, p) in &segs {
        std::fs::copy(p, crash.path().join(p.file_name().unwrap())).unwrap();
    }
    let r = Embedded::open(&crash.path().join("db")).unwrap();
    assert_eq!(r.revision().await.unwrap(), rev);
    assert_eq!(r.list("/w/", 0, None, 0).await.unwrap().kvs.len(), 49);
    assert!(r.get("/w/7").await.unwrap().is_none());
}

#[tokio::test]
async fn a_torn_wal_tail_is_dropped_and_damage_in_the_middle_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let s = Embedded::open(&path).unwrap();
    for i in 0..20 {
        s.create(&format!("/w/{i}"), vec![b'x'; 100]).await.unwrap();
    }
    // A crash now: copy the checkpoint and the WAL as they are on disk.
    let copy = |to: &Path| {
        std::fs::copy(&path, to.join("db")).unwrap();
        let (_, seg) = segments(&path).pop().unwrap();
        let to_seg = to.join(seg.file_name().unwrap());
        std::fs::copy(&seg, &to_seg).unwrap();
        to_seg
    };
    let torn = tempfile::tempdir().unwrap();
    let seg = copy(torn.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 50).unwrap();
    drop(f);
    let r = Embedded::open(&torn.path().join("db")).unwrap();
    let kept = r.list("/w/", 0, None, 0).await.unwrap().kvs.len();
    assert!(
        (0..20).contains(&kept),
        "the torn last record is dropped: {kept}"
    );
    drop(r);

    let damaged = tempfile::tempdir().unwrap();
    let seg = copy(damaged.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let err = Embedded::open(&damaged.path().join("db"))
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("is damaged at byte") && msg.contains(&seg.display().to_string()),
        "{msg}"
    );
    // Nothing was changed: the damaged segment is still there for the operator.
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
}

#[tokio::test]
async fn the_watch_history_is_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Embedded::open(&dir.path().join("db")).unwrap();
    let big = vec![b'x'; 1 << 20];
    let first = s.create("/big", big.clone()).await.unwrap();
    for _ in 0..40 {
        s.update("/big", big.clone(), 0).await.unwrap();
    }
    let (held, compacted) = {
        let st = s.inner.state.read().unwrap();
        (st.history_bytes, st.compacted)
    };
    assert!(held <= HISTORY_MAX_BYTES, "{held} bytes of history");
    assert!(compacted > first, "the oldest revisions were compacted");
    assert!(
        matches!(s.watch("/big", first).await, Err(Error::Compacted { .. })),
        "a watch from before the history is told so (410)"
    );
    let recent = s.revision().await.unwrap() - 2;
    assert!(s.watch("/big", recent).await.is_ok());
}

#[tokio::test]
async fn data_and_revision_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let rev = {
        let s = Embedded::open(&path).unwrap();
        s.create("/a", b"1".to_vec()).await.unwrap();
        let r = s.update("/a", b"2".to_vec(), 0).await.unwrap();
        s.create("/b", b"x".to_vec()).await.unwrap();
        s.delete("/b", 0).await.unwrap();
        assert!(r > 0);
        s.revision().await.unwrap()
    };
    // The writer thread holds the database until its channel closes; wait for the file lock to go.
    let s = loop {
        match Embedded::open(&path) {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    };
    assert_eq!(s.revision().await.unwrap(), rev);
    let a = s.get("/a").await.unwrap().unwrap();
    assert_eq!(&*a.value, b"2");
    assert!(s.get("/b").await.unwrap().is_none());
    assert!(matches!(
        s.watch("/", rev - 1).await,
        Err(Error::Compacted { .. })
    ));
}

#[tokio::test]
async fn a_page_past_the_prefix_is_empty_and_the_prefix_ends_where_its_keys_do() {
    assert_eq!(
        prefix_end("/registry/pods/").as_deref(),
        Some("/registry/pods0")
    );
    assert_eq!(prefix_end(""), None);
    let dir = tempfile::tempdir().unwrap();
    let s = Embedded::open(&dir.path().join("db")).unwrap();
    s.create("/p/a/1", b"1".to_vec()).await.unwrap();
    s.create("/p/a/2", b"2".to_vec()).await.unwrap();
    s.create("/p/b/1", b"3".to_vec()).await.unwrap();
    let rev = s.revision().await.unwrap();
    s.create("/p/a/3", b"4".to_vec()).await.unwrap();
    for at in [0, rev] {
        let page = s.list("/p/a/", at, Some("/p/z"), 1).await.unwrap();
        assert!(page.kvs.is_empty() && page.remaining == 0, "{page:?}");
        let page = s.list("/p/a/", at, None, 1).await.unwrap();
        assert_eq!(page.kvs[0].key, "/p/a/1");
        assert_eq!(page.remaining, if at == 0 { 2 } else { 1 }, "at {at}");
    }
}

mod timing {
    use super::super::*;
    #[tokio::test]
    #[ignore]
    async fn sequential_create_latency() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(&dir.path().join("db")).unwrap();
        let t = std::time::Instant::now();
        for i in 0..1000 {
            s.create(&format!("/k/{i}"), vec![0u8; 800]).await.unwrap();
        }
        eprintln!("1000 sequential creates: {:?}", t.elapsed());
    }

    /// Open time of a large store (`cargo test --release --lib reopen_time -- --ignored --nocapture`): 150,000
    /// values of 4 KB, as the scale benchmark's pods.
    #[tokio::test(flavor = "multi_thread")]
    #[ignore]
    async fn reopen_time_of_150000_values() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let s = Arc::new(Embedded::open(&path).unwrap());
        let mut tasks = Vec::new();
        for w in 0..64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..150_000).step_by(64) {
                    s.create(&format!("/registry/pods/ns/p{i:06}"), vec![b'x'; 4000])
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        drop(s);
        for _ in 0..2 {
            let t = std::time::Instant::now();
            let r = Embedded::open(&path).unwrap();
            eprintln!("open: {:?}", t.elapsed());
            drop(r);
        }
    }
}

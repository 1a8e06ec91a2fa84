//! The backend-agnostic conformance suite: every backend must pass it (the embedded one runs it in its unit tests).
//! It checks etcd's semantics, not an implementation.

use std::time::Duration;

use super::{DynStore, Error, Event, EventType};

async fn next(w: &mut super::WatchStream) -> super::Event {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("watch event within 5s")
        .expect("watch open")
        .expect("watch event ok")
}

/// Runs every check against an empty store. Panics on the first violation.
// Long by design: one scenario read top to bottom; each check builds on the keys and revisions the earlier ones left,
// as every Store backend must replay it.
pub async fn run(store: DynStore) {
    let base = store.revision().await.unwrap();

    // create-if-absent and a global revision
    let r1 = store
        .create("/registry/c/ns/a", b"a1".to_vec())
        .await
        .unwrap();
    assert!(r1 > base, "create bumps the revision");
    assert_eq!(
        store.create("/registry/c/ns/a", b"again".to_vec()).await,
        Err(Error::AlreadyExists("/registry/c/ns/a".into()))
    );
    let r2 = store
        .create("/registry/c/ns/b", b"b1".to_vec())
        .await
        .unwrap();
    assert!(r2 > r1);
    let got = store.get("/registry/c/ns/a").await.unwrap().unwrap();
    assert_eq!(
        (&*got.value, got.create_revision, got.mod_revision),
        (&b"a1"[..], r1, r1)
    );

    // compare-and-swap
    let stale = store
        .update("/registry/c/ns/a", b"a2".to_vec(), r1 + 1000)
        .await;
    assert!(matches!(stale, Err(Error::Conflict { .. })), "{stale:?}");
    let r3 = store
        .update("/registry/c/ns/a", b"a2".to_vec(), r1)
        .await
        .unwrap();
    assert!(r3 > r2);
    assert_eq!(
        store.update("/registry/c/ns/zz", b"x".to_vec(), 0).await,
        Err(Error::NotFound("/registry/c/ns/zz".into()))
    );
    let updated = store.get("/registry/c/ns/a").await.unwrap().unwrap();
    assert_eq!((updated.create_revision, updated.mod_revision), (r1, r3));

    // list by prefix, paging, and at an older revision
    store
        .create("/registry/c/ns/c", b"c1".to_vec())
        .await
        .unwrap();
    store
        .create("/registry/c/other/x", b"x".to_vec())
        .await
        .unwrap();
    store
        .create("/registry/c/ns2/y", b"y".to_vec())
        .await
        .unwrap();
    let all = store.list("/registry/c/ns/", 0, None, 0).await.unwrap();
    let keys: Vec<&str> = all.kvs.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(
        keys,
        ["/registry/c/ns/a", "/registry/c/ns/b", "/registry/c/ns/c"]
    );
    let page1 = store.list("/registry/c/ns/", 0, None, 2).await.unwrap();
    assert_eq!(page1.kvs.len(), 2);
    assert_eq!(page1.remaining, 1);
    let page2 = store
        .list(
            "/registry/c/ns/",
            page1.revision,
            Some(&page1.kvs[1].key),
            2,
        )
        .await
        .unwrap();
    assert_eq!(
        page2.kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["/registry/c/ns/c"]
    );
    assert_eq!(page2.remaining, 0);
    // list_more: the same pages, telling only whether keys follow
    let more1 = store
        .list_more("/registry/c/ns/", 0, None, 2)
        .await
        .unwrap();
    assert_eq!((&more1.kvs, more1.remaining > 0), (&page1.kvs, true));
    let more2 = store
        .list_more("/registry/c/ns/", r2, Some("/registry/c/ns/a"), 1)
        .await
        .unwrap();
    assert_eq!(
        (more2.kvs.len(), more2.remaining),
        (1, 0),
        "at r2 only a and b existed"
    );
    let old = store.list("/registry/c/ns/", r2, None, 0).await.unwrap();
    let old_vals: Vec<&[u8]> = old.kvs.iter().map(|k| &*k.value).collect();
    assert_eq!(
        old_vals,
        [&b"a1"[..], &b"b1"[..]],
        "a list at an older revision sees the old values"
    );

    // Pages of a list at one revision show that revision, whatever is written between them.
    for k in ["a", "b", "c", "d"] {
        store
            .create(
                &format!("/registry/c/page/{k}"),
                format!("{k}1").into_bytes(),
            )
            .await
            .unwrap();
    }
    let first = store.list("/registry/c/page/", 0, None, 1).await.unwrap();
    assert_eq!(first.remaining, 3);
    store
        .update("/registry/c/page/b", b"b2".to_vec(), 0)
        .await
        .unwrap();
    store.delete("/registry/c/page/c", 0).await.unwrap();
    store
        .create("/registry/c/page/bb", b"bb1".to_vec())
        .await
        .unwrap();
    store
        .update("/registry/c/page/d", b"d2".to_vec(), 0)
        .await
        .unwrap();
    store
        .update("/registry/c/page/d", b"d3".to_vec(), 0)
        .await
        .unwrap();
    let rest = store
        .list(
            "/registry/c/page/",
            first.revision,
            Some("/registry/c/page/a"),
            2,
        )
        .await
        .unwrap();
    let seen: Vec<(&str, &[u8])> = rest
        .kvs
        .iter()
        .map(|k| (k.key.as_str(), &*k.value))
        .collect();
    assert_eq!(
        seen,
        [
            ("/registry/c/page/b", &b"b1"[..]),
            ("/registry/c/page/c", &b"c1"[..])
        ]
    );
    assert_eq!(rest.remaining, 1, "d is left, bb was not there yet");
    let last = store
        .list(
            "/registry/c/page/",
            first.revision,
            Some("/registry/c/page/c"),
            0,
        )
        .await
        .unwrap();
    assert_eq!(
        last.kvs.iter().map(|k| &*k.value).collect::<Vec<_>>(),
        [&b"d1"[..]]
    );

    // delete with compare-and-swap
    let b = store.get("/registry/c/ns/b").await.unwrap().unwrap();
    assert!(matches!(
        store.delete("/registry/c/ns/b", b.mod_revision + 100).await,
        Err(Error::Conflict { .. })
    ));
    let (rd, prev) = store
        .delete("/registry/c/ns/b", b.mod_revision)
        .await
        .unwrap();
    assert_eq!(&*prev.value, b"b1");
    assert!(store.get("/registry/c/ns/b").await.unwrap().is_none());
    assert!(matches!(
        store.delete("/registry/c/ns/b", 0).await,
        Err(Error::NotFound(_))
    ));

    // watch from a revision: every event under the prefix, in order, then live ones
    let mut w = store.watch("/registry/c/ns/", r1).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key.as_str(), e.revision()),
        (EventType::Put, "/registry/c/ns/b", r2)
    );
    let e = next(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key.as_str(), e.revision()),
        (EventType::Put, "/registry/c/ns/a", r3)
    );
    assert_eq!(e.prev.as_ref().map(|p| &*p.value), Some(&b"a1"[..]));
    let e = next(&mut w).await;
    assert_eq!(e.kv.key, "/registry/c/ns/c");
    let e = next(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key.as_str(), e.revision()),
        (EventType::Delete, "/registry/c/ns/b", rd)
    );
    let rl = store
        .create("/registry/c/ns/d", b"d".to_vec())
        .await
        .unwrap();
    store
        .create("/registry/c/elsewhere", b"no".to_vec())
        .await
        .unwrap();
    let e = next(&mut w).await;
    assert_eq!(
        (e.kv.key.as_str(), e.revision()),
        ("/registry/c/ns/d", rl),
        "live events follow the backlog, filtered"
    );

    // many concurrent writers: every write gets its own revision, none lost
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.create(&format!("/registry/c/many/{i:03}"), vec![i as u8])
                .await
                .unwrap()
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.unwrap());
    }
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), 64, "each write has a distinct revision");
    assert_eq!(
        store
            .list("/registry/c/many/", 0, None, 0)
            .await
            .unwrap()
            .kvs
            .len(),
        64
    );

    // compaction
    let now = store.revision().await.unwrap();
    store.compact(now).await.unwrap();
    assert!(matches!(
        store.watch("/registry/c/", r1).await,
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(
        store.list("/registry/c/ns/", r1, None, 0).await,
        Err(Error::Compacted { .. })
    ));
    let mut w2 = store.watch("/registry/c/", now).await.unwrap();
    let r = store
        .create("/registry/c/after", b"z".to_vec())
        .await
        .unwrap();
    assert_eq!(next(&mut w2).await.revision(), r);

    // watchers opened one after another, from revisions the store saw lately (the etcd store serves them from one
    // shared watch): each gets the events under its prefix after its revision, in order, then live ones
    let before = store.revision().await.unwrap();
    let ra = store
        .create("/registry/c/w/a/1", b"1".to_vec())
        .await
        .unwrap();
    let rb = store
        .create("/registry/c/w/b/1", b"1".to_vec())
        .await
        .unwrap();
    let mut wa = store.watch("/registry/c/w/a/", before).await.unwrap();
    let mut wb = store.watch("/registry/c/w/b/", ra).await.unwrap();
    let mut wall = store.watch("/registry/c/w/", before).await.unwrap();
    let mut wnow = store.watch("/registry/c/w/", rb).await.unwrap();
    let ra2 = store
        .update("/registry/c/w/a/1", b"2".to_vec(), ra)
        .await
        .unwrap();
    let (rdel, _) = store.delete("/registry/c/w/b/1", rb).await.unwrap();
    let seen = |evs: Vec<Event>| -> Vec<(EventType, String, i64)> {
        evs.into_iter()
            .map(|e| (e.kind, e.kv.key.clone(), e.revision()))
            .collect()
    };
    let (a1, a2) = (next(&mut wa).await, next(&mut wa).await);
    assert_eq!(
        a2.prev.as_ref().map(|p| &*p.value),
        Some(&b"1"[..]),
        "an update carries the value before it"
    );
    assert_eq!(
        seen(vec![a1, a2]),
        [
            (EventType::Put, "/registry/c/w/a/1".to_string(), ra),
            (EventType::Put, "/registry/c/w/a/1".to_string(), ra2)
        ]
    );
    assert_eq!(
        seen(vec![next(&mut wb).await, next(&mut wb).await]),
        [
            (EventType::Put, "/registry/c/w/b/1".to_string(), rb),
            (EventType::Delete, "/registry/c/w/b/1".to_string(), rdel)
        ]
    );
    let mut all = Vec::new();
    for _ in 0..4 {
        all.push(next(&mut wall).await);
    }
    assert_eq!(
        all.iter().map(|e| e.revision()).collect::<Vec<_>>(),
        [ra, rb, ra2, rdel]
    );
    assert_eq!(
        seen(vec![next(&mut wnow).await, next(&mut wnow).await])
            .iter()
            .map(|e| e.2)
            .collect::<Vec<_>>(),
        [ra2, rdel],
        "nothing at or before the revision watched from"
    );
}

//! `capstan store` on the embedded store, with real processes: a snapshot saved from a running server and restored
//! into a new data directory serves the same objects at the same resourceVersions; restoring over a store, a
//! damaged snapshot and a store of a newer format are refused with clear errors and change nothing.

mod common;

use std::process::Command;

use common::{fails, ok, Server, BIN};

fn capstan(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("CAPSTAN_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn a_snapshot_restored_into_a_new_data_directory_serves_the_same_objects() {
    let s = Server::start();
    for i in 0..20 {
        let cm = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i}"}},"data":{{"i":"{i}"}}}}"#
        );
        let (code, v) = s.call(
            "POST",
            concat!("/", "api/v1/namespaces/default/configmaps"),
            "application/json",
            &cm,
        );
        assert_eq!(code, 201, "{v}");
    }
    let secret = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"key"},"stringData":{"password":"hunter2"}}"#;
    let (code, _) = s.call(
        "POST",
        concat!("/", "api/v1/namespaces/default/secrets"),
        "application/json",
        secret,
    );
    assert_eq!(code, 201);
    let (_, before) = s.call(
        "GET",
        concat!("/", "api/v1/namespaces/default/configmaps/cm-7"),
        "",
        "",
    );
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("cluster.snapshot");
    let said = ok(&s.capstan(&["store", "snapshot", "save", file.to_str().unwrap()]));
    assert!(said.contains("saved"), "{said}");
    // Secrets stay encrypted in the snapshot.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("hunter2"));
    use base64::Engine;
    assert!(!text.contains(&base64::engine::general_purpose::STANDARD.encode("hunter2")));

    // A damaged snapshot is refused by line, and nothing is written.
    let damaged = work.path().join("damaged.snapshot");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.truncate(lines.len() - 3);
    std::fs::write(&damaged, lines.join("\n") + "\n").unwrap();
    let target = work.path().join("restored");
    let e = fails(&capstan(
        &target,
        &["store", "snapshot", "restore", damaged.to_str().unwrap()],
    ));
    assert!(e.contains("damaged.snapshot") && e.contains("line"), "{e}");
    assert!(!target.join("store.redb").exists());

    // Restored into a new data directory (with the cluster's keys, for the encrypted Secret).
    std::fs::create_dir_all(&target).unwrap();
    for f in ["encryption.json", "token", "ca.crt", "ca.key"] {
        std::fs::copy(s.data_dir().join(f), target.join(f)).unwrap();
    }
    let said = ok(&capstan(
        &target,
        &["store", "snapshot", "restore", file.to_str().unwrap()],
    ));
    assert!(said.contains("restored"), "{said}");
    // Over an existing store: refused.
    let e = fails(&capstan(
        &target,
        &["store", "snapshot", "restore", file.to_str().unwrap()],
    ));
    assert!(e.contains("exists"), "{e}");
    drop(s);
    let dir = tempfile::TempDir::new().unwrap();
    let moved = dir.path().join("data");
    std::fs::rename(&target, &moved).unwrap();
    let t = Server::start_in(dir_from(moved));
    let (_, after) = t.call(
        "GET",
        concat!("/", "api/v1/namespaces/default/configmaps/cm-7"),
        "",
        "",
    );
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    let (_, secret) = t.call(
        "GET",
        concat!("/", "api/v1/namespaces/default/secrets/key"),
        "",
        "",
    );
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
}

/// A TempDir owning an existing directory (removed when dropped).
fn dir_from(path: std::path::PathBuf) -> tempfile::TempDir {
    let holder = tempfile::Builder::new()
        .prefix("restored")
        .tempdir_in(path.parent().unwrap())
        .unwrap();
    let target = holder.path().to_path_buf();
    std::fs::remove_dir(&target).unwrap();
    std::fs::rename(&path, &target).unwrap();
    holder
}

#[test]
fn a_store_of_a_newer_format_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(capstan::store::embedded::Embedded::open(&path).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(200));
    {
        let db = redb::Database::create(&path).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut meta = w
                .open_table(redb::TableDefinition::<&str, i64>::new("meta"))
                .unwrap();
            meta.insert("format", 99).unwrap();
        }
        w.commit().unwrap();
    }
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["server", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("store format 99") && said.contains("newer capstan"),
        "{said}"
    );
    // Nothing changed: the format is still the newer one, no server wrote its objects.
    let db = redb::Database::create(&path).unwrap();
    let r = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta = r
        .open_table(redb::TableDefinition::<&str, i64>::new("meta"))
        .unwrap();
    assert_eq!(meta.get("format").unwrap().unwrap().value(), 99);
    let kv = r
        .open_table(redb::TableDefinition::<&str, &[u8]>::new("kv"))
        .unwrap();
    assert_eq!(redb::ReadableTableMetadata::len(&kv).unwrap(), 0);
}

#[test]
fn a_store_of_the_first_key_layout_is_moved_to_kubernetes_layout_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            use capstan::store::Store;
            let store =
                capstan::store::embedded::Embedded::open(&dir.path().join("store.redb")).unwrap();
            let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"old","namespace":"default","uid":"0f0f0f0f-0000-4000-8000-000000000001","creationTimestamp":"2026-12-01T00:00:00Z"},"data":{"k":"v"}}"#;
            store
                .create(
                    concat!("/", "registry/core/configmaps/default/old"),
                    cm.as_bytes().to_vec(),
                )
                .await
                .unwrap();
        });
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let s = Server::start_in(dir);
    let (code, cm) = s.call(
        "GET",
        concat!("/", "api/v1/namespaces/default/configmaps/old"),
        "",
        "",
    );
    assert_eq!(code, 200, "{cm}");
    assert_eq!(cm["data"]["k"], "v");
    assert_eq!(
        cm["metadata"]["uid"],
        "0f0f0f0f-0000-4000-8000-000000000001"
    );
    // The snapshot shows Kubernetes' layout.
    let file = s.data_dir().join("layout.snapshot");
    ok(&s.capstan(&["store", "snapshot", "save", file.to_str().unwrap()]));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(concat!("\"", "/registry/configmaps/default/old\"")));
    assert!(text.contains(concat!("\"", "/registry/namespaces/default\"")));
    assert!(!text.contains("registry/core/"));
}

//! `capstan image build` and `inspect` as a user runs them: an image tarball from a directory and single files,
//! checked by reading it back; bad input is refused with the reason and leaves no file behind.

mod common;

use std::process::Command;

fn capstan(args: &[&str]) -> std::process::Output {
    Command::new(common::BIN).args(args).output().unwrap()
}

#[test]
fn an_image_is_built_from_files_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
    std::fs::write(dir.path().join("motd"), "welcome\n").unwrap();
    let out = dir.path().join("hello.tar");
    let add = format!("{}:/etc/motd", dir.path().join("motd").display());
    let o = capstan(&[
        "image",
        "build",
        "--tag",
        "demo/hello:v1",
        "--from-dir",
        root.to_str().unwrap(),
        "--add",
        &add,
        "--env",
        "GREETING=hi",
        "-o",
        out.to_str().unwrap(),
        "--",
        "/bin/hello",
        "--loud",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("demo/hello:v1"));
    let o = capstan(&["image", "inspect", out.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("demo/hello:v1"), "{text}");
    assert!(text.contains(r#"["/bin/hello","--loud"]"#), "{text}");
    assert!(text.contains("GREETING=hi"), "{text}");
    // The layer holds the files where the image says.
    let files = capstan::image::read_archive(&std::fs::read(&out).unwrap()).unwrap();
    let config = capstan::image::verify(&files).unwrap();
    let layer = config["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let entries = capstan::image::read_archive(&files[&format!("blobs/sha256/{layer}")]).unwrap();
    assert_eq!(entries["bin/hello"], b"#!/bin/sh\necho hello\n");
    assert_eq!(entries["etc/motd"], b"welcome\n");

    // Bad input: a clear reason, and no tarball.
    let bad = dir.path().join("bad.tar");
    for (args, why) in [
        (
            vec!["--tag", "Upper", "--from-dir", root.to_str().unwrap()],
            "lowercase",
        ),
        (
            vec!["--tag", "ok", "--from-dir", "/nonexistent/dir"],
            "not a directory",
        ),
        (vec!["--tag", "ok", "--add", "relative"], "SRC:DEST"),
        (
            vec![
                "--tag",
                "ok",
                "--add",
                &add.replace("/etc/motd", "etc/motd"),
            ],
            "absolute path",
        ),
    ] {
        let mut a = vec!["image", "build", "-o", bad.to_str().unwrap()];
        a.extend(args);
        a.extend(["--", "/bin/hello"]);
        let o = capstan(&a);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(why), "{why}: {err}");
        assert!(!bad.exists() && !bad.with_extension("tar.partial").exists());
    }
    let o = capstan(&[
        "image",
        "build",
        "--tag",
        "ok",
        "--from-dir",
        root.to_str().unwrap(),
        "-o",
        bad.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("entrypoint"),
        "{o:?}"
    );
}

#[test]
fn an_image_with_a_default_command_and_no_entrypoint_like_busybox() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bb.tar");
    let o = capstan(&[
        "image",
        "build",
        "--tag",
        "local/busybox:1",
        "--add",
        "/bin/sh:/bin/sh",
        "--cmd",
        "sh",
        "--cmd",
        "-c",
        "--cmd",
        "echo hi",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    let files = capstan::image::read_archive(&std::fs::read(&out).unwrap()).unwrap();
    let config = capstan::image::verify(&files).unwrap();
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["sh", "-c", "echo hi"])
    );
    assert!(config["config"].get("Entrypoint").is_none());
    let o = capstan(&["image", "inspect", out.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(r#"cmd:        ["sh","-c","echo hi"]"#));
    // Both: the entrypoint runs with the default command as its arguments.
    let both = dir.path().join("both.tar");
    let o = capstan(&[
        "image",
        "build",
        "--tag",
        "local/app:1",
        "--add",
        "/bin/sh:/bin/sh",
        "--cmd",
        "--serve",
        "-o",
        both.to_str().unwrap(),
        "--",
        "/bin/app",
    ]);
    assert!(o.status.success(), "{o:?}");
    let files = capstan::image::read_archive(&std::fs::read(&both).unwrap()).unwrap();
    let config = capstan::image::verify(&files).unwrap();
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/bin/app"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["--serve"]));
}

//! Errors that must come out clearly, before the terminal is taken.

use std::process::Command;

fn mictop(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mictop"))
        .args(args)
        .env_remove("MIC_ROOT")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "theme = \"neon\"\n").unwrap();
    let (ok, err) = mictop(&["--config", cfg.to_str().unwrap(), "--root", "/nonexistent"]);
    assert!(!ok);
    assert!(
        err.contains(cfg.to_str().unwrap()) && err.contains("key `theme`"),
        "{err}"
    );

    std::fs::write(&cfg, "[keys]\nboot = \"hyper-b\"\n").unwrap();
    let (ok, err) = mictop(&["--config", cfg.to_str().unwrap(), "--root", "/nonexistent"]);
    assert!(!ok);
    assert!(err.contains("keys.boot"), "{err}");

    let (ok, err) = mictop(&["--config", "/nonexistent/mictop.toml"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/mictop.toml"), "{err}");
}

#[test]
fn missing_driver_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "").unwrap();
    let (ok, err) = mictop(&[
        "--config",
        cfg.to_str().unwrap(),
        "--root",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("sys/class/mic") && err.contains("micemu"), "{err}");
}

#[test]
fn bad_interval_is_refused() {
    let (ok, err) = mictop(&["--interval", "1ms"]);
    assert!(!ok);
    assert!(err.contains("minimum"), "{err}");
}

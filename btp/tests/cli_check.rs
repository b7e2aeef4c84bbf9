//! `btp check` is `nginx -t` made semantic: exit 0 with `config OK`, or non-zero with one
//! `FILE:LINE:COL: message` line per problem. Startup runs the same validation and
//! refuses with the same lines — never a panic or a backtrace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn site(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("btp-cli-check-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("static")).unwrap();
    std::fs::write(dir.join("static/index.html"), "<!doctype html>").unwrap();
    dir
}

fn btp(args: &[&str], config: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_btp"));
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.args(args)
        .env_remove("BTP_CONFIG")
        .env("RUST_BACKTRACE", "1");
    cmd.output().expect("run btp")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const BROKEN: &str = "[gateway]\nlisten = \"127.0.0.1:18080\"\nadmin_listen = \"127.0.0.1:18080\"\nlisen = \"x\"\n\n[realtime]\nping_interval_ms = 10\n";

fn broken_lines(path: &Path) -> Vec<String> {
    let p = path.display();
    vec![
        format!("{p}:3:1: gateway.admin_listen port 18080 collides with gateway.listen (127.0.0.1:18080)"),
        format!("{p}:4:1: unknown key `gateway.lisen`"),
        format!("{p}:7:1: realtime.ping_interval_ms = 10 is out of range (50..=600000 ms)"),
    ]
}

#[test]
fn check_accepts_a_good_config_with_config_ok() {
    let dir = site("good");
    let path = dir.join("config.toml");
    std::fs::write(&path, "[gateway]\nlisten = \"127.0.0.1:18081\"\n").unwrap();
    let out = btp(&["check"], Some(&path));
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "config OK\n");
}

#[test]
fn check_lists_every_problem_as_file_line_col_and_fails() {
    let dir = site("bad");
    let path = dir.join("config.toml");
    std::fs::write(&path, BROKEN).unwrap();
    let out = btp(&["check"], Some(&path));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let lines: Vec<String> = text(&out.stderr).lines().map(str::to_owned).collect();
    assert_eq!(lines, broken_lines(&path));
}

#[test]
fn startup_refuses_an_invalid_config_with_the_same_lines_and_no_backtrace() {
    let dir = site("startup");
    let path = dir.join("config.toml");
    std::fs::write(&path, BROKEN).unwrap();
    for role in [&["up"][..], &["gateway"], &["api", "--worker", "0"]] {
        let out = btp(role, Some(&path));
        assert_eq!(out.status.code(), Some(1), "{role:?}");
        let stderr = text(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{role:?}: {stderr}"
        );
        let lines: Vec<String> = stderr.lines().map(str::to_owned).collect();
        assert_eq!(lines, broken_lines(&path), "{role:?}");
    }
}

#[test]
fn an_explicit_config_file_that_does_not_exist_is_an_error() {
    let dir = site("missing");
    let path = dir.join("nope.toml");
    let out = btp(&["check"], Some(&path));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:1:1: cannot read config file:", path.display())),
        "{stderr}"
    );
}

#[test]
fn btp_config_environment_variable_picks_the_file() {
    let dir = site("env");
    let path = dir.join("elsewhere.toml");
    std::fs::write(&path, "[api]\nworkers = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_btp"))
        .arg("check")
        .env("BTP_CONFIG", &path)
        .output()
        .expect("run btp");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "{}:2:1: api.workers = 0 must be within 1..=64",
            path.display()
        )
    );
}

#[test]
fn without_a_config_file_the_embedded_defaults_are_checked() {
    let dir = site("defaults");
    let out = Command::new(env!("CARGO_BIN_EXE_btp"))
        .arg("check")
        .env_remove("BTP_CONFIG")
        .current_dir(&dir)
        .output()
        .expect("run btp");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "config OK\n");
}

//! The binaries' command lines: `--help` and `--version` answer without starting anything, flags
//! mirror their environment variables, and a bad value names the flag.

use std::process::Command;

fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn revel_and_revel_traffic_have_a_command_line() {
    for (bin, flags) in [
        (
            env!("CARGO_BIN_EXE_revel"),
            &["--addr", "REVEL_ADDR", "--drain-seconds", "REVEL_DRAIN_SECONDS", "OBS_ENV"][..],
        ),
        (env!("CARGO_BIN_EXE_revel-traffic"), &["--addr", "--seconds", "--workers", "--secret", "REVEL_ADDR"][..]),
    ] {
        let (code, help) = run(bin, &["--help"], &[]);
        assert_eq!(code, 0, "{help}");
        for flag in flags {
            assert!(help.contains(flag), "{bin} --help lacks {flag}:\n{help}");
        }
        let (code, version) = run(bin, &["--version"], &[]);
        assert_eq!(
            (code, version.trim()),
            (0, format!("{} {}", bin.rsplit('/').next().unwrap(), env!("CARGO_PKG_VERSION")).as_str())
        );
    }
    let (code, err) = run(env!("CARGO_BIN_EXE_revel"), &["--addr", "nope"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("'--addr <ADDR>'"), "{err}");
    let (code, err) = run(env!("CARGO_BIN_EXE_revel"), &[], &[("REVEL_DRAIN_SECONDS", "soon")]);
    assert_eq!(code, 2);
    assert!(err.contains("--drain-seconds") && err.contains("from 0 to 3600"), "{err}");
    let (code, err) = run(env!("CARGO_BIN_EXE_revel-traffic"), &["--workers", "0"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--workers"), "{err}");
}

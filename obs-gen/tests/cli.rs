//! `obs-gen`'s command line: `--help` and `--version`, and a partial set of paths refused by name.

use std::process::Command;

#[test]
fn obs_gen_has_a_command_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_obs-gen")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(help.contains("[CATALOG] [MONITORING] [DEPLOY_DIR]"), "{help}");
    let out = Command::new(env!("CARGO_BIN_EXE_obs-gen")).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("obs-gen {}", env!("CARGO_PKG_VERSION")));
    // Two of the three paths: nothing is generated, the missing one is named.
    let out = Command::new(env!("CARGO_BIN_EXE_obs-gen")).args(["a.toml", "b.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("<DEPLOY_DIR>"));
}

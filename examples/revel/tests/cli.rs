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
        (env!("CARGO_BIN_EXE_revel-simulators"), &["--addr", "--webhook-url", "REVEL_SIMULATORS_ADDR"][..]),
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
    // A configuration file (`OTEL_CONFIG_FILE`) with a key obs does not know, or a value it
    // refuses, stops `revel` at start with the file and the key.
    let file = std::env::temp_dir().join(format!("revel-otel-{}.yaml", std::process::id()));
    for (text, key) in [
        ("file_format: \"1.0\"\ntracer_provider:\n  sampler:\n    always_onn:\n", "tracer_provider.sampler.always_onn"),
        ("file_format: \"1.0\"\nobs:\n  env: prod\n", "obs.env (OBS_ENV): \"prod\""),
    ] {
        std::fs::write(&file, text).unwrap();
        let (code, err) = run(env!("CARGO_BIN_EXE_revel"), &[], &[("OTEL_CONFIG_FILE", file.to_str().unwrap())]);
        assert_ne!(code, 0, "{err}");
        assert!(err.contains(&format!("{}: {key}", file.display())), "{err}");
    }
    std::fs::remove_file(&file).unwrap();
}

/// `docs/configuration.md`'s Revel table and the code in step: the variables the binaries' flags
/// mirror (from `--help`) and those the simulated services read are the table's rows, and the
/// services' defaults are the table's.
#[test]
fn the_configuration_table_lists_every_revel_variable_with_its_default() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md")).unwrap();
    let section = &doc[doc.find("\n## Revel").expect("a Revel section")..];
    let rows: Vec<Vec<String>> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().trim_matches('`').to_owned()).collect())
        .collect();
    let documented: std::collections::BTreeSet<String> = rows.iter().map(|r| r[0].clone()).collect();

    let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let defaults = revel::external::Externals::from_vars(|name| {
        read.borrow_mut().insert(name.to_owned());
        None
    })
    .unwrap();
    let mut read = read.into_inner();
    for bin in
        [env!("CARGO_BIN_EXE_revel"), env!("CARGO_BIN_EXE_revel-traffic"), env!("CARGO_BIN_EXE_revel-simulators")]
    {
        let (_, help) = run(bin, &["--help"], &[]);
        for piece in help.split("[env: ").skip(1) {
            read.insert(piece[..piece.find([']', '=']).unwrap()].to_owned());
        }
    }
    assert_eq!(read, documented, "the variables Revel reads (left) and the table's (right)");

    let default = |name: &str| rows.iter().find(|r| r[0] == name).unwrap()[1].clone();
    for (service, behaviour) in
        [("STRIPE", defaults.stripe), ("LLM", defaults.llm), ("EMAIL", defaults.email), ("PDF", defaults.pdf)]
    {
        assert_eq!(default(&format!("REVEL_{service}_LATENCY_MS")), behaviour.latency.as_millis().to_string());
        assert_eq!(default(&format!("REVEL_{service}_FAILURE_RATE")).parse::<f64>().unwrap(), behaviour.failure_rate);
    }
}

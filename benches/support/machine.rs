//! Facts about the machine a benchmark runs on (Linux `/proc`), shared by the obs benchmarks and
//! Revel's: no dependency beyond std.
#![allow(dead_code)] // each benchmark uses part of it

/// The CPU model (`/proc/cpuinfo`), printed with each report: machines of one kind differ.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The name and the CPU time (user + system, µs) in a `/proc/<pid>/stat` or
/// `/proc/<pid>/task/<tid>/stat` line; `None` if it is not one.
pub fn stat_cpu_us(stat: &str) -> Option<(&str, f64)> {
    // `pid (name) state ...`: the name may hold spaces and parentheses, so cut at the last ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|&i| f.get(i)?.parse::<f64>().ok()).sum();
    // USER_HZ is 100 on Linux.
    Some((name, ticks * 10_000.0))
}

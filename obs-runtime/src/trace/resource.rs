//! Resource detection: what every span says about the process it comes from, so that two replicas
//! are told apart in Tempo (OpenTelemetry's `service.instance.id`, `host.name`, `process.*`,
//! `container.id`; the Kubernetes attributes come from the environment, in `config`). Attributes
//! given in `OTEL_RESOURCE_ATTRIBUTES` win over detected ones, as the specification says.

use std::sync::OnceLock;

use opentelemetry::KeyValue;

/// This process's instance id: a random UUID, the same for the whole process.
pub(crate) fn instance_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(super::uuid_v4)
}

/// The detected attributes whose keys `given` does not set.
pub(crate) fn detected(given: &[(String, String)]) -> Vec<KeyValue> {
    let mut out = vec![
        KeyValue::new("service.instance.id", instance_id().to_owned()),
        KeyValue::new("process.pid", i64::from(std::process::id())),
        KeyValue::new("process.runtime.name", "rustc"),
        KeyValue::new("process.runtime.version", env!("OBS_RUSTC_VERSION")),
    ];
    if let Some(name) =
        std::env::current_exe().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    {
        out.push(KeyValue::new("process.executable.name", name));
    }
    if let Some(host) = host_name() {
        out.push(KeyValue::new("host.name", host));
    }
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    if let Some(id) = container_id(&read("/proc/self/cgroup"), &read("/proc/self/mountinfo")) {
        out.push(KeyValue::new("container.id", id));
    }
    out.retain(|kv| !given.iter().any(|(k, _)| k.as_str() == kv.key.as_str()));
    out
}

/// The kernel's host name (in a container, the container's).
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| std::env::var("HOSTNAME").ok())?;
    Some(name.trim().to_owned()).filter(|n| !n.is_empty())
}

/// The container's id: 64 hex digits in the process's cgroup path (cgroup v1, or v2 with
/// docker/containerd/cri-o scopes), else in the mount of its `/etc/hostname` (cgroup v2 with a
/// private cgroup namespace, where the path is `/`).
pub(crate) fn container_id(cgroup: &str, mountinfo: &str) -> Option<String> {
    let id_in = |text: &str| {
        text.split(|c: char| !c.is_ascii_hexdigit())
            .find(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .map(str::to_owned)
    };
    cgroup.lines().find_map(|l| l.rsplit(':').next().and_then(id_in)).or_else(|| {
        mountinfo
            .lines()
            .filter(|l| l.contains("/containers/") || l.contains("/sandboxes/"))
            .find_map(|l| l.split_whitespace().nth(3).and_then(id_in))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";

    #[test]
    fn container_ids_are_found_where_runtimes_put_them() {
        let v1 = format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n");
        assert_eq!(container_id(&v1, ""), Some(ID.into()));
        let v2_scope = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(container_id(&v2_scope, ""), Some(ID.into()));
        let kubepods = format!("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope\n");
        assert_eq!(container_id(&kubepods, ""), Some(ID.into()));
        // cgroup v2 in a private namespace: the path is `/`; the hostname file's mount says it.
        let mountinfo = format!(
            "677 675 254:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(container_id("0::/\n", &mountinfo), Some(ID.into()));
        // Not in a container.
        assert_eq!(
            container_id("0::/user.slice/user-1000.slice/session-3.scope\n", "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"),
            None
        );
        // 64 characters that are not all hex digits, or a longer run, are not an id.
        assert_eq!(container_id(&format!("0::/x-{}.scope", "g".repeat(64)), ""), None);
        assert_eq!(container_id(&format!("0::/x-{ID}0.scope"), ""), None);
    }

    #[test]
    fn detected_attributes_yield_to_given_ones() {
        let given = [("host.name".to_owned(), "set-by-hand".to_owned())];
        let attrs = detected(&given);
        let key = |k: &str| attrs.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.to_string());
        assert_eq!(key("host.name"), None, "the given one wins (added by the caller)");
        assert_eq!(key("process.pid"), Some(std::process::id().to_string()));
        assert_eq!(key("service.instance.id").map(|id| id.len()), Some(36));
        assert_eq!(key("service.instance.id"), key("service.instance.id"), "stable");
        assert_eq!(instance_id(), instance_id());
        assert_eq!(key("process.runtime.name").as_deref(), Some("rustc"));
    }
}

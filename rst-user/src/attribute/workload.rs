//! Workload names (`../shared` contract, docs/attribution.md): from a cgroup v2 path,
//! and for a reset without a socket from its network namespace. Pure functions, but for
//! the Kubernetes pod-log lookup, which [`pod_name`] takes as a closure.

/// The first 12 hex digits of a container id in a scope name, for the container
/// runtimes' systemd scopes (`docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`) and the cgroupfs layout (`/docker/<id>`).
fn container_id(component: &str, parent: Option<&str>) -> Option<String> {
    let hex = |s: &str| s.len() >= 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    for prefix in ["docker-", "cri-containerd-", "crio-", "libpod-"] {
        if let Some(id) = component
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".scope"))
            && hex(id)
        {
            return Some(id[..12].to_ascii_lowercase());
        }
    }
    // cgroupfs drivers: /docker/<id>, /kubepods/<qos>/pod<uid>/<id>.
    if hex(component) && parent.is_some_and(|p| p == "docker" || p.starts_with("pod")) {
        return Some(component[..12].to_ascii_lowercase());
    }
    None
}

/// The pod uid of a pod cgroup: `kubepods-<qos>-pod<uid>.slice` (systemd driver, the
/// uid's dashes written as underscores) or `pod<uid>` (cgroupfs driver).
fn pod_uid(component: &str) -> Option<String> {
    let uid = if let Some(s) = component.strip_suffix(".slice") {
        s.rsplit_once("-pod").map(|(_, u)| u)?
    } else {
        component.strip_prefix("pod")?
    };
    let uid = uid.replace('_', "-");
    let ok = uid.len() >= 32 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then_some(uid)
}

/// A systemd unit name: `.service` and `.scope` first, a `.slice` only when no
/// component below it names a unit.
fn unit(components: &[&str]) -> Option<String> {
    let named = |suffixes: &[&str]| {
        components
            .iter()
            .rev()
            .find(|c| suffixes.iter().any(|s| c.ends_with(s) && c.len() > s.len()))
            .map(|c| c.to_string())
    };
    named(&[".service", ".scope"]).or_else(|| named(&[".slice"]))
}

/// The workload of a cgroup v2 path (relative to the hierarchy's root, starting with
/// `/`). `pod_name(uid)` gives `<namespace>/<name>` when the pod is known.
pub fn from_cgroup(path: &str, pod_name: impl Fn(&str) -> Option<String>) -> String {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if let Some(uid) = components.iter().rev().find_map(|c| pod_uid(c)) {
        return match pod_name(&uid) {
            Some(n) => format!("pod:{n}"),
            None => format!("pod:{uid}"),
        };
    }
    for (i, c) in components.iter().enumerate().rev() {
        let parent = i.checked_sub(1).map(|p| components[p]);
        if let Some(id) = container_id(c, parent) {
            return format!("container:{id}");
        }
    }
    unit(&components)
        .unwrap_or_else(|| format!("cgroup:{}", if path.is_empty() { "/" } else { path }))
}

/// The `<namespace>/<name>` of pod `uid` from the kubelet's log directories
/// (`/var/log/pods/<namespace>_<name>_<uid>`), given their names.
pub fn pod_from_log_dirs<'a>(uid: &str, dirs: impl IntoIterator<Item = &'a str>) -> Option<String> {
    dirs.into_iter().find_map(|d| {
        let rest = d.strip_suffix(uid)?.strip_suffix('_')?;
        let (ns, name) = rest.split_once('_')?;
        Some(format!("{ns}/{name}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f6c1d2e3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678ab";

    #[test]
    fn mapping_table() {
        let none = |_: &str| None;
        let cases = [
            ("/system.slice/nginx.service", "nginx.service"),
            ("/rstmon-test.slice/s3-server.service", "s3-server.service"),
            (
                "/user.slice/user-1000.slice/session-3.scope",
                "session-3.scope",
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
                "foo.service",
            ),
            ("/system.slice", "system.slice"),
            (
                &format!("/system.slice/docker-{ID}.scope"),
                "container:4f6c1d2e3a4b",
            ),
            (
                &format!("/system.slice/cri-containerd-{ID}.scope"),
                "container:4f6c1d2e3a4b",
            ),
            (
                &format!("/machine.slice/crio-{ID}.scope"),
                "container:4f6c1d2e3a4b",
            ),
            (
                &format!("/machine.slice/libpod-{ID}.scope"),
                "container:4f6c1d2e3a4b",
            ),
            (&format!("/docker/{ID}"), "container:4f6c1d2e3a4b"),
            (
                &format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice/cri-containerd-{ID}.scope"
                ),
                "pod:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            ),
            (
                "/kubepods/besteffort/pod1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                "pod:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            ),
            ("/", "cgroup:/"),
            ("", "cgroup:/"),
            ("/mygroup/sub", "cgroup:/mygroup/sub"),
            // Not a container id: too short / not hex.
            ("/docker/abc", "cgroup:/docker/abc"),
            ("/system.slice/docker-xyz.scope", "docker-xyz.scope"),
            (".service", "cgroup:.service"),
        ];
        for (path, want) in cases {
            assert_eq!(from_cgroup(path, none), want, "{path}");
        }
    }

    #[test]
    fn pods_are_named_from_their_log_directories() {
        let uid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        let dirs = [
            "kube-system_coredns-abc_0000",
            &format!("shop_cart-7d9f_{uid}"),
        ];
        let dirs: Vec<&str> = dirs.iter().map(|s| s.as_ref()).collect();
        assert_eq!(
            pod_from_log_dirs(uid, dirs.iter().copied()),
            Some("shop/cart-7d9f".into())
        );
        assert_eq!(pod_from_log_dirs("nope", dirs.iter().copied()), None);
        let path = "/kubepods.slice/kubepods-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice";
        let got = from_cgroup(path, |u| pod_from_log_dirs(u, dirs.iter().copied()));
        assert_eq!(got, "pod:shop/cart-7d9f");
    }
}

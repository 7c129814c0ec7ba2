//! Exporter conventions of `rstmon run` (node_exporter and exporter-toolkit are the
//! anchors): `--web.config.file` (TLS, basic auth, headers, a bad file), listen
//! addresses (`:PORT` on IPv4 and IPv6, host names), `--web.telemetry-path`,
//! `process_*` metrics, a failed render answered 500 and counted by code, gzip,
//! `--log.format json`, a bad log filter, `--version`.
//!
//! Privileged: needs root (the daemon loads BPF; the tests make network namespaces).
//! Run with `--test-threads=1`.

mod common;

use std::{
    ffi::OsStr,
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use common::{BIN, IO_TIMEOUT, Metrics, rstmon, run_to_exit};
use rst_user::netns::Ns;

const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9745);
const REQUESTS: &str = "promhttp_metric_handler_requests_total";

fn ns() -> Ns {
    Ns::new().unwrap_or_else(|e| panic!("creating a namespace (needs root and iproute2): {e}"))
}

/// A directory of this test's own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("rstmon-web-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One HTTP/1.0 answer: status, header lines (lowercased names), body bytes.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn parse_answer(raw: &[u8]) -> Answer {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// Reads to EOF; a TLS peer that closes without close_notify ends the stream too.
fn read_all(s: &mut impl io::Read) -> io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => Ok(raw),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(e),
    }
}

/// `GET path` over plain HTTP/1.0 from inside `ns`, with extra header lines.
fn plain(ns: &Ns, to: SocketAddr, path: &str, extra: &str) -> Answer {
    let raw = ns
        .run(|| {
            let mut s = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: rstmon\r\n{extra}\r\n")?;
            read_all(&mut s)
        })
        .and_then(|r| r)
        .unwrap_or_else(|e| panic!("GET {path} from {to}: {e}"));
    parse_answer(&raw)
}

/// `GET path` over HTTPS (trusting `ca` only) from inside `ns`, with extra header
/// lines; with `client`, presenting that certificate chain and key.
fn https(
    ns: &Ns,
    to: SocketAddr,
    ca: &str,
    client: Option<(&str, &str)>,
    path: &str,
    extra: &str,
) -> io::Result<Answer> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = Arc::new(match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    });
    let raw = ns.run(|| {
        let tcp = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        let name = ServerName::from(to.ip());
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        write!(tls, "GET {path} HTTP/1.0\r\nHost: rstmon\r\n{extra}\r\n")?;
        tls.flush()?;
        read_all(&mut tls)
    })??;
    Ok(parse_answer(&raw))
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Authorization: Basic {b}\r\n")
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate
/// signed by it: (ca_pem, server_cert_pem, server_key_pem, client_cert_pem,
/// client_key_pem).
fn pki() -> (String, String, String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client, client_key) = leaf(vec!["prometheus".into()]);
    (ca.pem(), server, server_key, client, client_key)
}

/// `--web.config.file` with TLS and two basic-auth users: the right credentials over
/// HTTPS get 200 and the metrics (with the configured header); a wrong password, an
/// unknown user and none get 401 with `WWW-Authenticate: Basic`; plain HTTP on the TLS
/// port gets no metrics (400).
#[test]
fn tls_and_basic_auth() {
    let dir = TempDir::new("tls");
    let (ca, cert, key, _, _) = pki();
    dir.write("server.crt", &cert);
    dir.write("server.key", &key);
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let other = bcrypt::hash("other", 4).unwrap();
    let config = dir.write(
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  prometheus: '{hash}'\n  grafana: '{other}'\n"
        ),
    );
    let ns = ns();
    let d = rstmon()
        .listen(LISTEN)
        .args([OsStr::new("--web.config.file"), config.as_os_str()])
        .ready_when("/metrics", 400)
        .start(&ns);
    // Listening (plain HTTP is answered 400); then ready, as a client with credentials
    // sees it. `/-/ready` needs them too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = https(
            &ns,
            LISTEN,
            &ca,
            None,
            "/-/ready",
            &basic("prometheus", "s3cret"),
        );
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready: {:?}",
            r.map(|r| r.status)
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        https(&ns, LISTEN, &ca, None, "/-/ready", "")
            .unwrap()
            .status,
        401
    );

    let ok = https(
        &ns,
        LISTEN,
        &ca,
        None,
        "/metrics",
        &basic("prometheus", "s3cret"),
    )
    .unwrap();
    assert_eq!(ok.status, 200, "right credentials: {}", ok.text());
    assert!(
        ok.text().contains("rstmon_resets_sent_total{"),
        "{}",
        ok.text()
    );
    assert_eq!(ok.header("x-content-type-options"), Some("nosniff"));
    Metrics::parse(&ok.text());
    let ok = https(&ns, LISTEN, &ca, None, "/", &basic("grafana", "other")).unwrap();
    assert_eq!(ok.status, 200, "second user, landing page");

    for (what, extra) in [
        ("wrong password", basic("prometheus", "wrong")),
        ("unknown user", basic("nobody", "s3cret")),
        ("no credentials", String::new()),
        ("not basic", "Authorization: Bearer s3cret\r\n".to_string()),
    ] {
        let a = https(&ns, LISTEN, &ca, None, "/metrics", &extra).unwrap();
        assert_eq!(a.status, 401, "{what}: {}", a.text());
        assert_eq!(a.header("www-authenticate"), Some("Basic"), "{what}");
        assert!(!a.text().contains("rstmon_"), "{what}: metrics leaked");
    }

    let a = plain(&ns, LISTEN, "/metrics", &basic("prometheus", "s3cret"));
    println!("plain HTTP to the TLS port: {} {:?}", a.status, a.text());
    assert_eq!(a.status, 400);
    assert!(
        a.text().contains("HTTP request to an HTTPS server"),
        "{}",
        a.text()
    );
    assert!(!a.text().contains("rstmon_"));
    d.stop();
}

/// `client_auth_type: RequireAndVerifyClientCert`: a client certificate signed by
/// `client_ca_file` gets in; a client without one does not complete the handshake.
#[test]
fn tls_client_certificates_are_verified() {
    let dir = TempDir::new("mtls");
    let (ca, cert, key, client, client_key) = pki();
    dir.write("ca.crt", &ca);
    dir.write("server.crt", &cert);
    dir.write("server.key", &key);
    let config = dir.write(
        "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\n",
    );
    let ns = ns();
    let d = rstmon()
        .listen(LISTEN)
        .args([OsStr::new("--web.config.file"), config.as_os_str()])
        .ready_when("/metrics", 400)
        .start(&ns);
    let a = https(
        &ns,
        LISTEN,
        &ca,
        Some((&client, &client_key)),
        "/metrics",
        "",
    )
    .unwrap();
    assert_eq!(a.status, 200);
    let without = https(&ns, LISTEN, &ca, None, "/metrics", "");
    assert!(
        without.as_ref().is_err() || without.as_ref().is_ok_and(|a| a.status != 200),
        "no client certificate: got {:?}",
        without.map(|a| a.status)
    );
    d.stop();
}

/// A renewed certificate (both files rewritten, signed by another CA) is served from
/// the next connection on, without a restart; a broken pair written after it is
/// refused and the last good certificate stays.
#[test]
fn tls_certificate_files_are_reloaded_when_they_change() {
    let dir = TempDir::new("reload");
    let (ca1, cert1, key1, _, _) = pki();
    let (ca2, cert2, key2, _, _) = pki();
    dir.write("server.crt", &cert1);
    dir.write("server.key", &key1);
    let config = dir.write(
        "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    );
    let ns = ns();
    let d = rstmon()
        .listen(LISTEN)
        .args([OsStr::new("--web.config.file"), config.as_os_str()])
        .ready_when("/metrics", 400)
        .start(&ns);
    assert_eq!(https(&ns, LISTEN, &ca1, None, "/", "").unwrap().status, 200);
    assert!(
        https(&ns, LISTEN, &ca2, None, "/", "").is_err(),
        "CA 2 trusted before"
    );
    dir.write("server.crt", &cert2);
    dir.write("server.key", &key2);
    assert_eq!(
        https(&ns, LISTEN, &ca2, None, "/", "")
            .expect("the renewed certificate")
            .status,
        200
    );
    assert!(
        https(&ns, LISTEN, &ca1, None, "/", "").is_err(),
        "old certificate still served"
    );
    // A key that does not belong to the certificate: refused, the last good pair stays.
    dir.write("server.key", &key1);
    assert_eq!(https(&ns, LISTEN, &ca2, None, "/", "").unwrap().status, 200);
    let text = d.stderr();
    assert!(text.contains("TLS certificate reloaded"), "{text}");
    assert!(
        text.contains("still serving the previous certificate"),
        "{text}"
    );
    d.stop();
}

/// A web configuration file that cannot be used stops the daemon at start: non-zero
/// exit, one line naming the file and the problem.
#[test]
fn bad_web_config_is_one_line_and_non_zero() {
    let dir = TempDir::new("bad");
    let ns = ns();
    let cases = [
        (
            "tls_server_config:\n  cert_file: none.crt\n  key_file: none.key\n",
            "none.crt",
        ),
        ("basic_auth_users:\n  me: plaintext\n", "not a bcrypt hash"),
        ("tls_server_confg: {}\n", "unknown field `tls_server_confg`"),
        (
            "tls_server_config:\n  key_file: k\n",
            "missing one of cert or cert_file",
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let config = dir.write(&format!("bad{i}.yml"), yaml);
        let cmd = rstmon()
            .listen(LISTEN)
            .args([OsStr::new("--web.config.file"), config.as_os_str()])
            .command(&ns);
        let out = run_to_exit(cmd, "rstmon run with a bad web config");
        let (status, stderr) = (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        println!("{yaml:?}: {status}: {lines:?}");
        assert!(!status.success(), "{yaml:?} accepted");
        assert_eq!(lines.len(), 1, "{yaml:?}: one line, got {stderr}");
        assert!(lines[0].contains(want), "{yaml:?}: {}", lines[0]);
        assert!(
            lines[0].contains(&config.display().to_string()),
            "{}",
            lines[0]
        );
    }
    let missing = dir.0.join("missing.yml");
    let cmd = rstmon()
        .listen(LISTEN)
        .args([OsStr::new("--web.config.file"), missing.as_os_str()])
        .command(&ns);
    let out = run_to_exit(cmd, "rstmon run with a missing web config");
    let (status, stderr) = (out.status, String::from_utf8_lossy(&out.stderr));
    assert!(!status.success());
    assert!(
        stderr.contains("cannot read") && stderr.contains("missing.yml"),
        "{stderr}"
    );
}

/// `/etc/netns/NAME/hosts`, which `ip netns exec NAME` mounts over `/etc/hosts`:
/// names of the test's own inside its namespace. Removed on drop.
struct NetnsHosts(PathBuf);

impl NetnsHosts {
    fn new(ns: &Ns, text: &str) -> Self {
        let dir = Path::new("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), text).unwrap();
        Self(dir)
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // Only if no other namespace has files there.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

/// `:PORT` answers on 127.0.0.1 and ::1; a host name listens on every address it
/// resolves to (here one name for 127.0.0.1 and ::1, in the namespace's own hosts file).
#[test]
fn any_port_is_ipv4_and_ipv6_and_host_names_resolve() {
    let ns = ns();
    let _hosts = NetnsHosts::new(&ns, "127.0.0.1 rstmon-both\n::1 rstmon-both\n");
    let d = rstmon()
        .listen(LISTEN)
        .args(["--web.listen-address", ":9746"])
        .args(["--web.listen-address", "rstmon-both:9747"])
        .start(&ns);
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        let a = plain(&ns, SocketAddr::new(ip, 9746), "/metrics", "");
        assert_eq!(a.status, 200, ":9746 on {ip}");
        assert!(a.text().contains("rstmon_build_info"));
        let a = plain(&ns, SocketAddr::new(ip, 9747), "/metrics", "");
        assert_eq!(a.status, 200, "rstmon-both:9747 on {ip}");
    }
    let text = d.stderr();
    for addr in [
        "127.0.0.1:9745",
        "[::]:9746",
        "127.0.0.1:9747",
        "[::1]:9747",
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains("serving /metrics") && l.contains(&format!("address={addr} "))),
            "no serving line for {addr}:\n{text}"
        );
    }
    d.stop();
}

/// `--web.telemetry-path`: the exposition moves there, `/metrics` is 404, the landing
/// page links to the new path.
#[test]
fn telemetry_path_moves_the_metrics() {
    let ns = ns();
    let d = rstmon()
        .listen(LISTEN)
        .args(["--web.telemetry-path", "/x/rst"])
        .start(&ns);
    assert!(
        plain(&ns, LISTEN, "/x/rst", "")
            .text()
            .contains("rstmon_resets_sent_total")
    );
    assert_eq!(plain(&ns, LISTEN, "/metrics", "").status, 404);
    let landing = plain(&ns, LISTEN, "/", "");
    assert!(
        landing.text().contains("href=\"/x/rst\""),
        "{}",
        landing.text()
    );
    d.stop();
}

/// `process_*` under the names and types of the client libraries, with plausible
/// values: resident memory 1 MiB..1 GiB and within a factor of 2 of the daemon's VmRSS.
#[test]
fn process_metrics_are_plausible() {
    let ns = ns();
    let d = rstmon().listen(LISTEN).start(&ns);
    let text = d.scrape_text();
    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_virtual_memory_max_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("process_threads", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing"
        );
    }
    let m = Metrics::parse(&text);
    let rss = m.value("process_resident_memory_bytes", &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let vm_rss: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .expect("VmRSS")
        * 1024.0;
    println!("process_resident_memory_bytes {rss}, VmRSS {vm_rss}");
    assert!((1048576.0..1073741824.0).contains(&rss), "rss {rss}");
    assert!(
        (0.5..2.0).contains(&(rss / vm_rss)),
        "rss {rss} vs VmRSS {vm_rss}"
    );
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .count() as f64;
    let open = m.value("process_open_fds", &[]);
    assert!((open - fds).abs() <= 4.0, "open fds {open} vs /proc {fds}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = m.value("process_start_time_seconds", &[]);
    assert!(
        start <= now + 1.0 && start > now - 300.0,
        "start {start}, now {now}"
    );
    assert!(m.value("process_threads", &[]) >= 1.0);
    d.stop();
}

/// A daemon held before its programs are loaded while `hold` exists (the testing aid
/// `RSTMON_TEST_HOLD_START_FILE`; the file is made here), once `/metrics` answers.
fn held<'a>(ns: &'a Ns, hold: &Path) -> common::Daemon<'a> {
    std::fs::write(hold, "").unwrap();
    rstmon()
        .listen(LISTEN)
        .env("RSTMON_TEST_HOLD_START_FILE", hold)
        .ready_when("/metrics", 200)
        .start(ns)
}

/// `/metrics` answers while the programs are still loaded (held here with the testing
/// aid `RSTMON_TEST_HOLD_START_FILE`): `rstmon_ready 0`, the build, the kernel, the
/// process and the server's own series, and no family of resets, interfaces or hooks;
/// `/-/ready` is 503 and `/-/healthy` 200. Once loaded: `rstmon_ready 1`, every family,
/// `/-/ready` 200. Both expositions pass `promtool check metrics`.
#[test]
fn metrics_answer_while_starting_and_ready_says_when() {
    let dir = TempDir::new("hold");
    let hold = dir.0.join("hold");
    let ns = ns();
    let d = held(&ns, &hold);
    let starting = plain(&ns, LISTEN, "/metrics", "");
    assert_eq!(starting.status, 200);
    let text = starting.text();
    let m = Metrics::parse(&text);
    assert_eq!(m.value("rstmon_ready", &[]), 0.0, "{text}");
    for present in [
        "rstmon_build_info{",
        "rstmon_kernel_info{",
        "process_resident_memory_bytes ",
        "rstmon_http_connections_open ",
        "promhttp_metric_handler_requests_total{",
    ] {
        assert!(
            text.contains(present),
            "{present} missing while starting:\n{text}"
        );
    }
    for absent in [
        "rstmon_resets_sent_total",
        "rstmon_resets_received_total",
        "rstmon_wire_resets_total",
        "rstmon_xdp_attached",
        "rstmon_hook_attached",
        "rstmon_reset_reason_supported",
    ] {
        assert!(!text.contains(absent), "{absent} while starting:\n{text}");
    }
    if let Err(e) = rst_testkit::promtool_check_metrics(&text) {
        panic!("{e}");
    }
    let r = plain(&ns, LISTEN, "/-/ready", "");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("starting"), "{}", r.text());
    assert_eq!(plain(&ns, LISTEN, "/-/healthy", "").status, 200);
    assert!(plain(&ns, LISTEN, "/", "").text().contains("starting"));

    std::fs::remove_file(&hold).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while plain(&ns, LISTEN, "/-/ready", "").status != 200 {
        assert!(Instant::now() < deadline, "not ready 30 s after the hold");
        thread::sleep(Duration::from_millis(20));
    }
    let text = plain(&ns, LISTEN, "/metrics", "").text();
    let m = Metrics::parse(&text);
    assert_eq!(m.value("rstmon_ready", &[]), 1.0);
    assert!(text.contains("rstmon_resets_sent_total{"), "{text}");
    assert!(text.contains("rstmon_hook_attached{"), "{text}");
    if let Err(e) = rst_testkit::promtool_check_metrics(&text) {
        panic!("{e}");
    }
    d.stop();
}

/// A SIGTERM while the programs are still loaded (held) exits 0 at once: the load is
/// abandoned, not awaited.
#[test]
fn a_signal_while_starting_exits_at_once() {
    let dir = TempDir::new("hold-term");
    let hold = dir.0.join("hold");
    let ns = ns();
    let d = held(&ns, &hold);
    assert_eq!(plain(&ns, LISTEN, "/-/ready", "").status, 503);
    let t = Instant::now();
    let (status, stderr) = d.signal_and_wait(libc::SIGTERM);
    let took = t.elapsed();
    println!("exit {status} after {took:?}");
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("stopped while starting"), "{stderr}");
    // The hold file is still there: the load never ran, and the exit did not wait for it.
    assert!(took < Duration::from_secs(3), "took {took:?}: {stderr}");
}

/// A render that fails is answered 500 and counted under code="500"; the next good
/// scrape is 200 (forced with the testing aid `RSTMON_TEST_FAIL_RENDER_FILE`).
#[test]
fn failed_render_is_500_and_counted() {
    let dir = TempDir::new("fail");
    let flag = dir.0.join("fail-now");
    let ns = ns();
    let d = rstmon()
        .listen(LISTEN)
        .env("RSTMON_TEST_FAIL_RENDER_FILE", &flag)
        .start(&ns);
    let before = d.scrape();
    assert_eq!(before.value(REQUESTS, &[("code", "500")]), 0.0);
    std::fs::write(&flag, "").unwrap();
    for _ in 0..2 {
        let a = plain(&ns, LISTEN, "/metrics", "");
        assert_eq!(a.status, 500, "{}", a.text());
        assert!(a.text().contains("scrape failed"), "{}", a.text());
    }
    std::fs::remove_file(&flag).unwrap();
    let after = d.scrape();
    println!(
        "{REQUESTS}: 200 {} -> {}, 500 {} -> {}",
        before.value(REQUESTS, &[("code", "200")]),
        after.value(REQUESTS, &[("code", "200")]),
        before.value(REQUESTS, &[("code", "500")]),
        after.value(REQUESTS, &[("code", "500")])
    );
    assert_eq!(after.delta(&before, REQUESTS, &[("code", "500")]), 2);
    // The scrape `before` itself, counted after it was answered.
    assert_eq!(after.delta(&before, REQUESTS, &[("code", "200")]), 1);
    assert_eq!(
        after.value("promhttp_metric_handler_requests_in_flight", &[]),
        1.0
    );
    d.stop();
}

/// The shape of an exposition: every line with the sample value cut off.
fn shape(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            if l.starts_with('#') {
                l.to_string()
            } else {
                l.rsplit_once(' ').map_or(l, |(s, _)| s).to_string()
            }
        })
        .collect()
}

/// `Accept-Encoding: gzip` gets a gzip body that decodes to the same exposition (the
/// same series, in the same order); without it, or with `gzip;q=0`, plain text.
#[test]
fn gzip_when_asked() {
    let ns = ns();
    let d = rstmon().listen(LISTEN).start(&ns);
    let z = plain(
        &ns,
        LISTEN,
        "/metrics",
        "Accept-Encoding: deflate, gzip\r\n",
    );
    assert_eq!(z.status, 200);
    assert_eq!(z.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&z.body[..])
        .read_to_string(&mut text)
        .expect("a gzip body");
    let raw = plain(&ns, LISTEN, "/metrics", "");
    assert_eq!(raw.header("content-encoding"), None);
    println!(
        "gzip {} bytes, plain {} bytes",
        z.body.len(),
        raw.body.len()
    );
    assert!(z.body.len() * 3 < raw.body.len(), "gzip barely compresses");
    assert_eq!(shape(&text), shape(&raw.text()));
    let q0 = plain(&ns, LISTEN, "/metrics", "Accept-Encoding: gzip;q=0\r\n");
    assert_eq!(q0.header("content-encoding"), None);
    d.stop();
}

/// `--log.format json`: every line the daemon logs is a JSON object with a level and a
/// message.
#[test]
fn json_logs() {
    let ns = ns();
    let d = rstmon()
        .listen(LISTEN)
        .global_args(["--log.format", "json", "--log.level", "debug"])
        .start(&ns);
    let text = d.stderr();
    d.stop();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 2, "{text}");
    let mut serving = false;
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"));
        assert!(v["level"].is_string(), "{l}");
        let msg = v["fields"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{l}"));
        serving |= msg == "serving /metrics" && v["fields"]["address"] == LISTEN.to_string();
    }
    assert!(serving, "no serving line:\n{text}");
}

/// A log filter that does not parse, from `--log` or `RSTMON_LOG`: exit 2 and one line
/// naming the bad directive; nothing falls back to `info`.
#[test]
fn bad_log_filter_is_an_error() {
    for (args, env, bad) in [
        (&["--log", "debg", "check"][..], None, "`debg`"),
        (&["check"][..], Some("info,rstmon=lots"), "`rstmon=lots`"),
        (&["--log.level", "verbose", "check"][..], None, "`verbose`"),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        match env {
            Some(v) => cmd.env("RSTMON_LOG", v),
            None => cmd.env_remove("RSTMON_LOG"),
        };
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{args:?} {env:?}: {stderr}");
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(bad) && stderr.contains("bad log filter"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "check ran anyway");
    }
}

/// The git revision of the tree the binary was built from, if this is a checkout.
fn git_head(dir: &Path) -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `--version`: version, revision, commit date, rustc, target, profile, features; `-V`
/// one line with version and revision.
#[test]
fn version_names_the_build() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let long = String::from_utf8(out.stdout).unwrap();
    println!("{long}");
    let field = |k: &str| {
        long.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap_or_else(|| panic!("no `{k}:` in {long}"))
            .to_string()
    };
    assert!(
        long.starts_with(&format!("rstmon {}\n", env!("CARGO_PKG_VERSION"))),
        "{long}"
    );
    let revision = field("revision");
    if let Some(head) = git_head(Path::new(env!("CARGO_MANIFEST_DIR"))) {
        assert_eq!(revision, head, "revision is the commit built");
    }
    let date = field("commit date");
    assert!(
        date == "unknown" || (date.len() == 10 && date.starts_with("20")),
        "{date}"
    );
    assert!(field("rustc").starts_with("rustc 1."));
    assert!(field("target").contains("linux"));
    assert!(["release", "debug"].contains(&field("profile").as_str()));
    field("features");
    let out = Command::new(BIN).arg("-V").output().unwrap();
    let short = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        short,
        format!("rstmon {} ({revision} {date})\n", env!("CARGO_PKG_VERSION"))
    );
}

//! A TLS origin for the lab: a self-signed certificate and
//! `tests/tls_origin.py` (HTTPS, dual-stack) in the server namespace.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::Lab;

/// Runs a command that must succeed; returns its output.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes `cert.pem` and `key.pem` (EC P-256, one day, CN www.lab.test)
/// into `dir`, with the subjectAltName `san` (e.g. `DNS:www.lab.test`).
pub fn self_signed_cert(dir: &Path, san: &str) {
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=www.lab.test"])
            .arg("-addext")
            .arg(format!("subjectAltName={san}"))
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem")),
    );
}

/// The TLS origin process, killed on drop.
pub struct TlsOrigin(Child);

impl TlsOrigin {
    /// Serves `www` over HTTPS on `ports` (comma-separated) with the
    /// certificate in `dir`; returns once it listens.
    pub fn start(lab: &Lab, dir: &Path, ports: &str, www: &Path) -> TlsOrigin {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &lab.server_ns(), "python3"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls_origin.py"))
            .arg(ports)
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .arg(www)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the TLS origin");
        let mut ready = [0u8; 5];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut ready)
            .expect("TLS origin ready");
        TlsOrigin(child)
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

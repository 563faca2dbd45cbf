//! Extra hosts beside the lab: a namespace of its own per host (a parent
//! proxy, a VPN gateway), wired to the router by a veth pair on a /28 of
//! 203.0.113.0/24, its default route through the router. Deleted on drop,
//! whatever runs inside killed first.

use super::Lab;
use std::process::Command;

/// A host in a namespace of its own, linked to the lab's router.
pub struct SideHost {
    /// Its namespace.
    pub ns: String,
    /// Its address.
    pub addr: String,
    /// The router's address on the link.
    pub router_addr: String,
    /// The router's end of the link (`NAME0`).
    pub router_dev: String,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SideHost {
    /// Adds host `name` (a short word) as the `index`th side host (1..=14):
    /// 203.0.113.(16·index + 2), the router at .(16·index + 1).
    pub fn add(lab: &Lab, name: &str, index: u8) -> SideHost {
        let ns = format!("{}-{name}", lab.prefix);
        let base = 16 * u16::from(index);
        let host = SideHost {
            addr: format!("203.0.113.{}", base + 2),
            router_addr: format!("203.0.113.{}", base + 1),
            router_dev: format!("{name}0"),
            ns,
        };
        run(&["ip", "netns", "add", &host.ns]);
        let rtr = lab.router_ns();
        let (idx_a, idx_b) = (format!("{}", 100 + base), format!("{}", 101 + base));
        run(&[
            "ip",
            "-n",
            &host.ns,
            "link",
            "add",
            "eth0",
            "index",
            &idx_a,
            "type",
            "veth",
            "peer",
            "name",
            &host.router_dev,
            "index",
            &idx_b,
            "netns",
            &rtr,
        ]);
        run(&["ip", "-n", &host.ns, "link", "set", "lo", "up"]);
        run(&[
            "ip",
            "-n",
            &host.ns,
            "addr",
            "add",
            &format!("{}/28", host.addr),
            "dev",
            "eth0",
        ]);
        run(&[
            "ip",
            "-n",
            &rtr,
            "addr",
            "add",
            &format!("{}/28", host.router_addr),
            "dev",
            &host.router_dev,
        ]);
        run(&["ip", "-n", &host.ns, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &rtr, "link", "set", &host.router_dev, "up"]);
        run(&[
            "ip",
            "-n",
            &host.ns,
            "route",
            "add",
            "default",
            "via",
            &host.router_addr,
        ]);
        host
    }

    /// Gives the host its own hosts file (`ip netns exec` mounts it over
    /// /etc/hosts for processes started in the namespace).
    pub fn hosts(&self, lines: &str) {
        let dir = format!("/etc/netns/{}", self.ns);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            format!("{dir}/hosts"),
            format!("127.0.0.1 localhost\n{lines}"),
        )
        .unwrap();
        std::fs::write(format!("{dir}/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    }

    /// Runs `args` inside the host's namespace and waits for it.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts `args` inside the host's namespace (killed with it).
    pub fn spawn(&self, args: &[&str], log: &std::path::Path) -> std::process::Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap()
    }
}

impl Drop for SideHost {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).output();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.ns));
    }
}

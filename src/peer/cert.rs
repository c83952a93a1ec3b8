//! `wanmirror cert`: a CA and the certificates of a first peer setup, so that mutual
//! TLS works before anyone has a PKI at hand. Production setups use their own CA; the
//! files here are ordinary PEM either way.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// What was written.
#[derive(Debug)]
pub struct Written {
    pub files: Vec<PathBuf>,
}

/// Creates in `dir`: `ca.pem`/`ca.key`, `serve.pem`/`serve.key` valid for
/// `serve_names`, and `client-<name>.pem`/`.key` for each client name. Refuses to
/// overwrite any existing file (a CA replaced by mistake locks every peer out).
pub fn create(dir: &Path, serve_names: &[String], clients: &[String]) -> Result<Written, String> {
    if serve_names.is_empty() {
        return Err("name the serve side (--serve NAME, a DNS name or IP address the destination connects to)".into());
    }
    if clients.is_empty() {
        return Err(
            "name at least one client (--client NAME, as in its [[serve.client]] name)".into(),
        );
    }
    for n in serve_names.iter().chain(clients) {
        if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() {
            return Err(format!(
                "{n:?} is not a DNS name or IP address a certificate can hold"
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut planned = vec![
        dir.join("ca.pem"),
        dir.join("ca.key"),
        dir.join("serve.pem"),
        dir.join("serve.key"),
    ];
    for c in clients {
        planned.push(dir.join(format!("client-{c}.pem")));
        planned.push(dir.join(format!("client-{c}.key")));
    }
    if let Some(p) = planned.iter().find(|p| p.exists()) {
        return Err(format!(
            "{} exists: refusing to overwrite certificates or keys",
            p.display()
        ));
    }
    let e = |what: &str, err: rcgen::Error| format!("cannot make the {what}: {err}");
    let ca_key = KeyPair::generate().map_err(|x| e("CA key", x))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|x| e("CA", x))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // A name of its own per CA: a certificate from another setup's CA is then
    // refused as from an unknown issuer, not as a bad signature of a namesake.
    let tag: u32 = rand::random();
    ca.distinguished_name
        .push(DnType::CommonName, format!("wanmirror peer CA {tag:08x}"));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(|x| e("CA", x))?;
    let mut out = Vec::new();
    let mut write = |name: String, text: String, secret: bool| -> Result<(), String> {
        let p = dir.join(name);
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(if secret { 0o600 } else { 0o644 });
        }
        let mut f = o
            .open(&p)
            .map_err(|x| format!("cannot write {}: {x}", p.display()))?;
        f.write_all(text.as_bytes())
            .map_err(|x| format!("cannot write {}: {x}", p.display()))?;
        out.push(p);
        Ok(())
    };
    write("ca.pem".into(), ca_cert.pem(), false)?;
    write("ca.key".into(), ca_key.serialize_pem(), true)?;
    let leaf = |names: &[String], usage: ExtendedKeyUsagePurpose, what: &str| {
        let key = KeyPair::generate().map_err(|x| e(what, x))?;
        let mut p = CertificateParams::new(names.to_vec()).map_err(|x| e(what, x))?;
        p.distinguished_name
            .push(DnType::CommonName, names[0].clone());
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p
            .signed_by(&key, &ca_cert, &ca_key)
            .map_err(|x| e(what, x))?;
        Ok::<_, String>((cert.pem(), key.serialize_pem()))
    };
    let (c, k) = leaf(
        serve_names,
        ExtendedKeyUsagePurpose::ServerAuth,
        "serve certificate",
    )?;
    write("serve.pem".into(), c, false)?;
    write("serve.key".into(), k, true)?;
    for name in clients {
        let (c, k) = leaf(
            std::slice::from_ref(name),
            ExtendedKeyUsagePurpose::ClientAuth,
            "client certificate",
        )?;
        write(format!("client-{name}.pem"), c, false)?;
        write(format!("client-{name}.key"), k, true)?;
    }
    Ok(Written { files: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setup_is_made_once_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let w = create(
            dir.path(),
            &["127.0.0.1".into(), "dc-a.example".into()],
            &["dc-b".into()],
        )
        .unwrap();
        assert_eq!(w.files.len(), 6);
        let again = create(dir.path(), &["x".into()], &["dc-b".into()]).unwrap_err();
        assert!(again.contains("refusing to overwrite"), "{again}");
        assert!(create(dir.path(), &[], &["y".into()])
            .unwrap_err()
            .contains("--serve"));
        assert!(create(dir.path(), &["x y".into()], &["z".into()])
            .unwrap_err()
            .contains("not a DNS name"));
        // The certificates load as the peer's TLS setup reads them.
        let t = super::super::tls::transport(super::super::tls::Congestion::Bbr, 8);
        super::super::tls::server_config(
            &dir.path().join("serve.pem"),
            &dir.path().join("serve.key"),
            &dir.path().join("ca.pem"),
            t,
        )
        .unwrap();
        let t = super::super::tls::transport(super::super::tls::Congestion::Cubic, 0);
        super::super::tls::client_config(
            &dir.path().join("ca.pem"),
            &dir.path().join("client-dc-b.pem"),
            &dir.path().join("client-dc-b.key"),
            t,
        )
        .unwrap();
    }
}

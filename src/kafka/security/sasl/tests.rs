use super::*;
use proptest::prelude::*;

fn scram(mech: Mechanism, user: &str, password: &str, nonce: &str) -> Exchange {
    Exchange::new(mech, user, Secret::new(password), nonce.to_string())
}

/// RFC 7677, section 3: the SCRAM-SHA-256 example exchange, byte for byte.
#[test]
fn scram_sha_256_follows_the_rfc_7677_example() {
    let mut x = scram(
        Mechanism::ScramSha256,
        "user",
        "pencil",
        "rOprNGfwEbeRWgbNEkqO",
    );
    assert_eq!(x.first().unwrap(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
    let keys = KeyCache::default();
    let server_first =
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    let client_final = x.next(server_first, &keys).unwrap().unwrap();
    assert_eq!(
        String::from_utf8(client_final).unwrap(),
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );
    assert_eq!(
        x.next(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", &keys),
        Ok(None)
    );
}

/// RFC 7677's exchange with SHA-512 instead of SHA-256. The expected messages were
/// computed with Python's hashlib and hmac (an implementation of its own), whose same
/// script reproduces RFC 7677's SHA-256 figures above exactly.
#[test]
fn scram_sha_512_matches_an_independent_computation() {
    let mut x = scram(
        Mechanism::ScramSha512,
        "user",
        "pencil",
        "rOprNGfwEbeRWgbNEkqO",
    );
    x.first().unwrap();
    let keys = KeyCache::default();
    let client_final = x
        .next(
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            &keys,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8(client_final).unwrap(),
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwnYPJQ=="
    );
    assert_eq!(
        x.next(
            b"v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2rR7N7Zw==",
            &keys
        ),
        Ok(None)
    );
}

/// The server side of SCRAM, written out from RFC 5802 section 3 for the test: what a
/// broker holding `password` answers.
fn server_answers(
    mech: Mechanism,
    password: &str,
    client_first: &[u8],
    client_final: impl FnOnce(&[u8]) -> Vec<u8>,
) -> (Vec<u8>, Vec<u8>) {
    let bare = std::str::from_utf8(&client_first[3..]).unwrap().to_string();
    let cnonce = bare.split(",r=").nth(1).unwrap();
    let salt = b"0123456789abcdef";
    let first = format!("r={cnonce}srv,s={},i=4096", B64.encode(salt));
    let fin = client_final(first.as_bytes());
    let fin = String::from_utf8(fin).unwrap();
    let (without_proof, proof) = fin.rsplit_once(",p=").unwrap();
    let auth = format!("{bare},{first},{without_proof}");
    let mut salted = vec![
        0u8;
        if mech == Mechanism::ScramSha512 {
            64
        } else {
            32
        }
    ];
    match mech {
        Mechanism::ScramSha512 => {
            pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, 4096, &mut salted)
        }
        _ => pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, 4096, &mut salted),
    }
    let stored = hash(mech, &hmac(mech, &salted, b"Client Key"));
    let sig = hmac(mech, &stored, auth.as_bytes());
    let client_key: Vec<u8> = B64
        .decode(proof)
        .unwrap()
        .iter()
        .zip(&sig)
        .map(|(a, b)| a ^ b)
        .collect();
    let last = if hash(mech, &client_key) == stored {
        let server_key = hmac(mech, &salted, b"Server Key");
        format!("v={}", B64.encode(hmac(mech, &server_key, auth.as_bytes())))
    } else {
        "e=invalid-proof".to_string()
    };
    (first.into_bytes(), last.into_bytes())
}

#[test]
fn scram_sha_512_logs_in_against_a_server_that_knows_the_password() {
    let keys = KeyCache::default();
    let mut x = scram(Mechanism::ScramSha512, "mirror", "s3cret", &nonce());
    let first = x.first().unwrap();
    let mut sent = None;
    let (_, last) = server_answers(Mechanism::ScramSha512, "s3cret", &first, |sf| {
        let f = x.next(sf, &keys).unwrap().unwrap();
        sent = Some(f.clone());
        f
    });
    assert!(sent.is_some());
    assert_eq!(x.next(&last, &keys), Ok(None));
}

/// tansu 0.6 answers a failed SCRAM login with error code 0 and `e=invalid-proof` or
/// `e=unknown-user` as its final message: that must fail the login, whatever the code.
#[test]
fn an_error_attribute_in_the_final_message_fails_the_login() {
    for (password, server_knows) in [("wrong", "right"), ("right", "right")] {
        let keys = KeyCache::default();
        let mut x = scram(Mechanism::ScramSha256, "mirror", password, &nonce());
        let first = x.first().unwrap();
        let (_, last) = server_answers(Mechanism::ScramSha256, server_knows, &first, |sf| {
            x.next(sf, &keys).unwrap().unwrap()
        });
        let got = x.next(&last, &keys);
        if password == server_knows {
            assert_eq!(got, Ok(None));
        } else {
            assert_eq!(got, Err(SaslError::Refused("invalid-proof".into())));
        }
    }
    let mut x = scram(Mechanism::ScramSha512, "ghost", "pw", "abc");
    x.first().unwrap();
    assert_eq!(
        x.next(b"e=unknown-user", &KeyCache::default()),
        Err(SaslError::Refused("unknown-user".into()))
    );
}

/// A server that does not hold our credentials cannot forge the signature: a wrong one
/// fails, as does a final message without one.
#[test]
fn a_wrong_or_missing_server_signature_fails() {
    for last in [
        &b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G5="[..],
        b"v=AAAA",
        b"v=not base64!",
        b"",
        b"x=1",
    ] {
        let mut x = scram(
            Mechanism::ScramSha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
        );
        x.first().unwrap();
        let keys = KeyCache::default();
        x.next(
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            &keys,
        )
        .unwrap();
        let got = x.next(last, &keys);
        assert!(
            matches!(got, Err(SaslError::Protocol(_))),
            "{last:?}: {got:?}"
        );
        // And nothing more is accepted after a failure.
        assert!(x.next(b"v=x", &keys).is_err());
    }
}

#[test]
fn bad_server_first_messages_are_refused() {
    let cases: [(&[u8], &str); 8] = [
        (b"r=other-nonce,s=AAAA,i=4096", "does not extend"),
        (b"r=abc,s=AAAA,i=4096", "does not extend"),
        (b"r=abcX,s=AAAA,i=100", "outside"),
        (b"r=abcX,s=AAAA,i=99999999", "outside"),
        (b"r=abcX,s=AAAA,i=x", "not a number"),
        (b"r=abcX,i=4096", "no s="),
        (b"m=ext,r=abcX,s=AAAA,i=4096", "mandatory"),
        (b"\xff\xfe", "UTF-8"),
    ];
    for (msg, says) in cases {
        let mut x = scram(Mechanism::ScramSha512, "u", "p", "abc");
        x.first().unwrap();
        let e = x.next(msg, &KeyCache::default()).unwrap_err().to_string();
        assert!(e.contains(says), "{msg:?}: {e}");
    }
}

#[test]
fn user_names_are_escaped_and_the_password_never_printed() {
    let mut x = scram(Mechanism::ScramSha256, "a=b,c", "hunter2", "n0nce");
    assert_eq!(x.first().unwrap(), b"n,,n=a=3Db=2Cc,r=n0nce");
    let shown = format!("{x:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("***"));
}

/// RFC 4616 section 4: authzid absent, then NUL, authcid, NUL, password.
#[test]
fn plain_sends_the_rfc_4616_message_and_ends_on_the_answer() {
    let mut x = Exchange::new(
        Mechanism::Plain,
        "tim",
        Secret::new("tanstaaftanstaaf"),
        nonce(),
    );
    assert_eq!(x.first().unwrap(), b"\0tim\0tanstaaftanstaaf");
    assert_eq!(x.next(b"", &KeyCache::default()), Ok(None));
    let mut bad = Exchange::new(Mechanism::Plain, "t\0m", Secret::new("p"), nonce());
    assert!(matches!(bad.first(), Err(SaslError::Input(_))));
}

#[test]
fn mechanisms_parse_by_their_kafka_names() {
    for m in [
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
    ] {
        assert_eq!(Mechanism::parse(m.name()), Some(m));
    }
    assert_eq!(Mechanism::parse("scram-sha-512"), None);
    assert_eq!(Mechanism::parse("GSSAPI"), None);
    let n = nonce();
    assert!(n.len() >= 32 && !n.contains(','), "{n}");
}

/// The salted password is computed once per salt and count, then reused.
#[test]
fn the_key_cache_reuses_the_salted_password_for_the_same_salt() {
    let keys = KeyCache::default();
    let a = keys.salted(Mechanism::ScramSha256, "p", b"salt", 4096);
    assert_eq!(keys.salted(Mechanism::ScramSha256, "p", b"salt", 4096), a);
    let b = keys.salted(Mechanism::ScramSha256, "p", b"other", 4096);
    assert_ne!(a, b);
}

/// Attribute keys must be one ASCII letter; others (a multi-byte character, two
/// letters) are not attributes, and never panic the parse.
#[test]
fn odd_attribute_keys_are_ignored() {
    assert_eq!(attributes("€=x,ab=y,=z,r=ok"), vec![('r', "ok")]);
    let mut x = scram(Mechanism::ScramSha256, "u", "p", "abc");
    x.first().unwrap();
    assert!(x
        .next("€=x,r=abcd,s=AAAA,i=4096".as_bytes(), &KeyCache::default())
        .is_ok());
}

proptest! {
    /// Any text as a server message (multi-byte characters included): an answer or
    /// an error, never a panic.
    #[test]
    fn arbitrary_text_never_panics(
        text in "[^,]{0,4}=[^,]{0,12}(,[^,]{0,4}=[^,]{0,12}){0,6}",
        last in "\\PC{0,40}",
    ) {
        let keys = KeyCache::default();
        let mut x = scram(Mechanism::ScramSha256, "u", "p", "abc");
        x.first().unwrap();
        if x.next(text.as_bytes(), &keys).is_ok() {
            let _ = x.next(last.as_bytes(), &keys);
        }
    }

    /// Whatever the server sends, at either step, the exchange answers or fails; it
    /// never panics.
    #[test]
    fn arbitrary_server_messages_never_panic(
        first in proptest::collection::vec(any::<u8>(), 0..200),
        last in proptest::collection::vec(any::<u8>(), 0..200),
        sha512 in any::<bool>(),
    ) {
        let mech = if sha512 { Mechanism::ScramSha512 } else { Mechanism::ScramSha256 };
        let keys = KeyCache::default();
        let mut x = scram(mech, "u", "p", "abc");
        x.first().unwrap();
        let mut with_nonce = b"r=abcdef,s=AAAA,i=4096,".to_vec();
        with_nonce.extend(&first);
        for msg in [first.clone(), with_nonce] {
            let mut y = scram(mech, "u", "p", "abc");
            y.first().unwrap();
            if y.next(&msg, &keys).is_ok() {
                prop_assert!(y.next(&last, &keys).is_err() || last.starts_with(b"v="));
            }
        }
        let _ = x.next(&first, &keys);
    }
}

use super::*;
use proptest::prelude::*;
use std::sync::Arc;

/// The first flight of a real rustls client for `name`, as it would cross the wire.
fn client_hello_for(name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
    let mut out = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut out).unwrap();
    }
    out
}

#[test]
fn finds_the_name_in_a_real_client_hello() {
    let hello = client_hello_for("API.Example.com");
    assert_eq!(
        parse(&hello),
        Ok(Hello::Complete {
            sni: Some("api.example.com".into())
        })
    );
}

#[test]
fn an_ip_address_sends_no_sni() {
    // Clients never put an IP literal in SNI (RFC 6066 3).
    let hello = client_hello_for("127.0.0.1");
    assert_eq!(parse(&hello), Ok(Hello::Complete { sni: None }));
}

#[test]
fn every_prefix_asks_for_more_and_never_fails() {
    let hello = client_hello_for("a.example.com");
    for cut in 0..hello.len() {
        match parse(&hello[..cut]) {
            Ok(Hello::Incomplete { needed }) => assert!(needed > cut && needed <= hello.len()),
            other => panic!("prefix of {cut} bytes: {other:?}"),
        }
    }
}

#[test]
fn a_hello_split_over_several_records_is_reassembled() {
    let hello = client_hello_for("split.example.com");
    let payload = &hello[RECORD_HEADER..];
    let mut fragmented = Vec::new();
    for chunk in payload.chunks(50) {
        fragmented.extend_from_slice(&[22, 3, 1]);
        fragmented.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        fragmented.extend_from_slice(chunk);
    }
    assert_eq!(
        parse(&fragmented),
        Ok(Hello::Complete {
            sni: Some("split.example.com".into())
        })
    );
}

#[test]
fn plain_http_and_garbage_are_not_tls() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(SniError::NotTls));
    assert_eq!(parse(&[0x16, 0x02, 0, 0, 1]), Err(SniError::NotTls));
}

#[test]
fn malformed_lengths_are_errors() {
    let mut hello = client_hello_for("x.example.com");
    // Claim a session id longer than the whole message.
    hello[RECORD_HEADER + 4 + 34] = 0xff;
    assert!(matches!(parse(&hello), Err(SniError::Malformed(_))));
    // A handshake that is not a ClientHello (ServerHello type 2).
    let mut other = client_hello_for("x.example.com");
    other[RECORD_HEADER] = 2;
    assert!(matches!(parse(&other), Err(SniError::Malformed(_))));
    // An empty record would let a client stall us with zero-progress records.
    assert!(matches!(
        parse(&[22, 3, 1, 0, 0]),
        Err(SniError::Malformed(_))
    ));
}

/// A minimal ClientHello, in one record, whose only extension is SNI with `name` as is:
/// for names a real client would refuse to send.
fn client_hello_with_raw_name(name: &[u8]) -> Vec<u8> {
    let be16 = |n: usize| u16::try_from(n).unwrap().to_be_bytes();
    let mut list = vec![NAME_TYPE_HOST];
    list.extend_from_slice(&be16(name.len()));
    list.extend_from_slice(name);
    let mut extension = EXTENSION_SERVER_NAME.to_be_bytes().to_vec();
    extension.extend_from_slice(&be16(list.len() + 2));
    extension.extend_from_slice(&be16(list.len()));
    extension.extend_from_slice(&list);
    // Version, random, empty session id, one cipher suite, null compression.
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&be16(extension.len()));
    body.extend_from_slice(&extension);
    let mut handshake = vec![HANDSHAKE_CLIENT_HELLO, 0];
    handshake.extend_from_slice(&be16(body.len()));
    handshake.extend_from_slice(&body);
    let mut record = vec![CONTENT_HANDSHAKE, 3, 1];
    record.extend_from_slice(&be16(handshake.len()));
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn a_name_of_only_dots_is_malformed() {
    // Found by `cargo fuzz run sni`: ".." used to come back as Some(""), which no route
    // should be asked to match.
    assert_eq!(
        parse(&client_hello_with_raw_name(b"Www.Example.com.")),
        Ok(Hello::Complete {
            sni: Some("www.example.com".into())
        })
    );
    for dots in [&b"."[..], b"..", b"..."] {
        assert!(matches!(
            parse(&client_hello_with_raw_name(dots)),
            Err(SniError::Malformed(_))
        ));
    }
}

#[test]
fn an_oversized_hello_is_refused_early() {
    let mut header = vec![
        22,
        3,
        1,
        0x40,
        0x00,
        HANDSHAKE_CLIENT_HELLO,
        0x01,
        0x00,
        0x00,
    ];
    header.resize(RECORD_HEADER + 0x4000, 0);
    assert_eq!(parse(&header), Err(SniError::TooLarge));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn corrupted_real_hellos_never_panic(index in 0usize..4096, value in any::<u8>()) {
        let mut hello = client_hello_for("fuzz.example.com");
        let at = index % hello.len();
        hello[at] = value;
        let _ = parse(&hello);
    }
}

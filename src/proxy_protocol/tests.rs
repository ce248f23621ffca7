//! Unit and property tests of the PROXY protocol parser and encoder.

use super::*;
use proptest::prelude::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// Feeds `bytes` the way the socket reader does: only as many as the parser asks for.
fn parse_incrementally(bytes: &[u8]) -> Result<(Header, usize), ParseError> {
    let mut have = 0;
    loop {
        match parse(&bytes[..have])? {
            Parsed::Complete { header, consumed } => return Ok((header, consumed)),
            Parsed::Incomplete { needed } => {
                assert!(needed > have, "parser must ask for more than it has");
                if needed > bytes.len() {
                    return Err(ParseError::V1("test input ended"));
                }
                have = needed;
            }
        }
    }
}

#[test]
fn v1_tcp4_tcp6_and_unknown() {
    let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
    let (header, consumed) = parse_incrementally(line).unwrap();
    assert_eq!(consumed, 41);
    assert_eq!(
        header,
        Header::Proxied {
            source: addr("192.0.2.7:56324"),
            destination: addr("10.0.0.1:443")
        }
    );
    let (header, _) = parse_incrementally(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n").unwrap();
    assert_eq!(
        header,
        Header::Proxied {
            source: addr("[2001:db8::1]:1"),
            destination: addr("[::1]:65535")
        }
    );
    let unknown = b"PROXY UNKNOWN ffff::1 whatever\r\n";
    assert_eq!(
        parse_incrementally(unknown).unwrap(),
        (Header::Local, unknown.len())
    );
    assert_eq!(
        parse_incrementally(b"PROXY UNKNOWN\r\n").unwrap(),
        (Header::Local, 15)
    );
}

#[test]
fn v1_malformed_is_refused() {
    let bad: &[&[u8]] = &[
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY \r\n",
        b"PROXY \n",
        b"PROXY TCP4 \xff\r\n",
    ];
    for input in bad {
        assert!(
            parse_incrementally(input).is_err(),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100], b"\r\n"].concat();
    assert!(matches!(parse(&long), Err(ParseError::V1(_))));
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ParseError::NotProxy));
    assert_eq!(parse(b"\r\n\r\nx"), Err(ParseError::NotProxy));
}

#[test]
fn v2_roundtrip_and_exact_bytes() {
    let bytes = encode_v2(addr("192.0.2.7:56324"), addr("10.0.0.1:443"));
    let expected: Vec<u8> = [
        &V2_SIGNATURE[..],
        &[0x21, 0x11, 0x00, 0x0c],
        &[192, 0, 2, 7, 10, 0, 0, 1],
        &56324u16.to_be_bytes(),
        &443u16.to_be_bytes(),
    ]
    .concat();
    assert_eq!(bytes, expected);
    assert_eq!(
        parse_incrementally(&bytes).unwrap(),
        (
            Header::Proxied {
                source: addr("192.0.2.7:56324"),
                destination: addr("10.0.0.1:443")
            },
            28
        )
    );
    let v6 = encode_v2(addr("[2001:db8::1]:1"), addr("10.0.0.1:2"));
    assert_eq!(v6.len(), 16 + 36);
    assert_eq!(
        parse(&v6).unwrap(),
        Parsed::Complete {
            header: Header::Proxied {
                source: addr("[2001:db8::1]:1"),
                destination: addr("[::ffff:10.0.0.1]:2")
            },
            consumed: 52
        }
    );
}

#[test]
fn v2_local_unspec_unix_and_tlvs() {
    let mut local = V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    assert_eq!(parse_incrementally(&local).unwrap(), (Header::Local, 16));
    let mut unix = V2_SIGNATURE.to_vec();
    unix.extend_from_slice(&[0x21, 0x31, 0x00, 216]);
    unix.extend_from_slice(&[0u8; 216]);
    assert_eq!(parse_incrementally(&unix).unwrap(), (Header::Local, 232));
    // A TCP4 block followed by a TLV (type 0x04 NOOP, length 3): skipped, fully consumed.
    let mut tlv = encode_v2(addr("1.2.3.4:5"), addr("6.7.8.9:10"));
    tlv[15] = 12 + 6;
    tlv.extend_from_slice(&[0x04, 0x00, 0x03, 1, 2, 3]);
    let (header, consumed) = parse_incrementally(&tlv).unwrap();
    assert_eq!(consumed, tlv.len());
    assert!(matches!(header, Header::Proxied { .. }));
}

#[test]
fn v2_malformed_is_refused() {
    let base = encode_v2(addr("1.2.3.4:5"), addr("6.7.8.9:10"));
    let mut wrong_version = base.clone();
    wrong_version[12] = 0x11;
    let mut wrong_command = base.clone();
    wrong_command[12] = 0x22;
    let mut wrong_family = base.clone();
    wrong_family[13] = 0x51;
    let mut short_block = base.clone();
    short_block[15] = 4;
    short_block.truncate(20);
    for input in [wrong_version, wrong_command, wrong_family, short_block] {
        assert!(matches!(parse(&input), Err(ParseError::V2(_))), "{input:?}");
    }
    assert_eq!(
        parse(&base[..20]),
        Ok(Parsed::Incomplete { needed: 28 }),
        "waits for the announced length"
    );
}

#[test]
fn v1_encoding() {
    assert_eq!(
        encode_v1(addr("192.0.2.7:56324"), addr("10.0.0.1:443")),
        b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n"
    );
    assert_eq!(
        encode_v1(addr("[::1]:1"), addr("10.0.0.1:2")),
        b"PROXY TCP6 ::1 ::ffff:10.0.0.1 1 2\r\n"
    );
    assert_eq!(
        encode(SendProxy::V1, addr("[::ffff:1.2.3.4]:1"), addr("5.6.7.8:2")),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "mapped IPv4 is written as IPv4"
    );
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn random_bytes_after_a_signature_never_panic(
        v2 in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let head: &[u8] = if v2 { &V2_SIGNATURE } else { b"PROXY " };
        let bytes = [head, &tail].concat();
        if let Ok(Parsed::Complete { consumed, .. }) = parse(&bytes) {
            prop_assert!(consumed <= bytes.len());
        }
        if let Ok(Parsed::Incomplete { needed }) = parse(&bytes) {
            prop_assert!(needed > bytes.len());
        }
    }

    /// What the socket reader relies on, whatever TCP splits: each prefix asks for more
    /// (never past the header) or gives the whole input's answer. The fuzz target
    /// `fuzz/fuzz_targets/proxy_protocol.rs` checks the same at much greater depth.
    #[test]
    fn every_prefix_asks_for_more_or_agrees(
        v2 in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let head: &[u8] = if v2 { &V2_SIGNATURE } else { b"PROXY " };
        let bytes = [head, &tail].concat();
        let whole = parse(&bytes);
        for cut in 0..bytes.len() {
            match parse(&bytes[..cut]) {
                Ok(Parsed::Incomplete { needed }) => {
                    prop_assert!(needed > cut);
                    if let Ok(Parsed::Complete { consumed, .. }) = whole {
                        prop_assert!(needed <= consumed);
                    }
                }
                other => prop_assert_eq!(&other, &whole),
            }
        }
    }

    #[test]
    fn encode_then_parse_roundtrips(
        v4 in any::<bool>(),
        a in any::<[u8; 16]>(),
        b in any::<[u8; 16]>(),
        ports in any::<(u16, u16)>(),
        v1 in any::<bool>(),
    ) {
        let ip = |o: [u8; 16]| if v4 {
            IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(o))
        };
        let (source, destination) = (SocketAddr::new(ip(a), ports.0), SocketAddr::new(ip(b), ports.1));
        let version = if v1 { SendProxy::V1 } else { SendProxy::V2 };
        let bytes = encode(version, source, destination);
        let parsed = parse(&bytes).unwrap();
        let Parsed::Complete { header: Header::Proxied { source: s, destination: d }, consumed } = parsed else {
            panic!("{parsed:?}");
        };
        prop_assert_eq!(consumed, bytes.len());
        prop_assert_eq!(s.ip().to_canonical(), source.ip().to_canonical());
        prop_assert_eq!(d.ip().to_canonical(), destination.ip().to_canonical());
        prop_assert_eq!((s.port(), d.port()), ports);
    }
}

#[test]
fn unknown_headers_parse_as_local() {
    for version in [SendProxy::V1, SendProxy::V2] {
        let bytes = encode_unknown(version);
        assert_eq!(
            parse(&bytes),
            Ok(Parsed::Complete {
                header: Header::Local,
                consumed: bytes.len()
            })
        );
    }
}

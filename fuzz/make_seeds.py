#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets: fuzz/corpus/<target>/seed-*.

A handful of valid inputs so libFuzzer starts from the interesting shapes instead of
discovering the v2 signature or a TLS record by chance. Standard library only; the
ClientHellos come from Python's own TLS stack (OpenSSL) through memory BIOs, no network.
Run from anywhere: python3 fuzz/make_seeds.py
"""

import ipaddress
import pathlib
import ssl
import struct

HERE = pathlib.Path(__file__).resolve().parent
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command, family, body):
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack(">H", len(body)) + body


def addresses(source, destination, sport, dport):
    return (ipaddress.ip_address(source).packed + ipaddress.ip_address(destination).packed
            + struct.pack(">HH", sport, dport))


def proxy_protocol_seeds():
    tcp4 = addresses("192.0.2.7", "10.0.0.1", 56324, 443)
    tcp6 = addresses("2001:db8::7", "2001:db8::1", 56324, 443)
    unix = b"/run/client.sock".ljust(108, b"\0") + b"/run/sluice.sock".ljust(108, b"\0")
    alpn_tlv = b"\x01" + struct.pack(">H", 2) + b"h2"
    return {
        "v1-tcp4": b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n\r\n",
        "v1-tcp6": b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n",
        "v1-unknown": b"PROXY UNKNOWN\r\n",
        "v2-tcp4": v2(1, 0x11, tcp4) + b"GET / HTTP/1.1\r\n\r\n",
        "v2-tcp6": v2(1, 0x21, tcp6),
        "v2-tcp4-tlv": v2(1, 0x11, tcp4 + alpn_tlv),
        "v2-unix": v2(1, 0x31, unix),
        "v2-local": v2(0, 0x00, b""),
    }


def client_hello(server_name, maximum=None):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        context.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        connection.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def fragmented(hello, size):
    """The same handshake message spread over records of at most `size` bytes."""
    payload, out = hello[5:], b""
    for at in range(0, len(payload), size):
        chunk = payload[at:at + size]
        out += bytes([22, 3, 1]) + struct.pack(">H", len(chunk)) + chunk
    return out


def sni_seeds():
    tls13 = client_hello("api.example.com")
    return {
        "tls13": tls13,
        "tls12": client_hello("Legacy.Example.org", ssl.TLSVersion.TLSv1_2),
        "no-sni": client_hello(None),
        "fragmented": fragmented(tls13, 100),
    }


def main():
    for target, seeds in [("proxy_protocol", proxy_protocol_seeds()), ("sni", sni_seeds())]:
        directory = HERE / "corpus" / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (directory / f"seed-{name}").write_bytes(data)
            print(f"{target}/seed-{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()

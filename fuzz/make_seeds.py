#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets: fuzz/corpus/<target>/seed-*.

A handful of valid inputs so libFuzzer starts from the interesting shapes instead of
discovering the v2 signature or a TLS record by chance, and for the HTTP/1 targets valid and
slightly broken requests, responses and chunked bodies (the edges where parsers disagree). Standard library only; the
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


def request_seeds():
    """Requests sluice serves, ones it hands to hyper, and slightly broken ones."""
    return {
        "get": b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
        "pipelined": b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: a\r\n\r\n"
                     b"GET /3 HTTP/1.1\r\nConnection: close\r\n\r\nGET /4 HTTP/1.1\r\n\r\n",
        "bare-lf": b"\r\nGET / HTTP/1.1\nHost: a\nX-A: 1\nx-a: 2\n\n",
        "absolute": b"OPTIONS * HTTP/1.1\r\n\r\nGET http://example.com:8080/x HTTP/1.1\r\n"
                    b"Host: example.com\r\n\r\n",
        "post": b"GET / HTTP/1.1\r\n\r\nPOST /f HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                b"GET / HTTP/1.1\r\n\r\n",
        "chunked": b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"3\r\nabc\r\n0\r\n\r\n",
        "smuggle": b"GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n",
        "upgrade": b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "http10": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "obs-text": b"GET / HTTP/1.1\r\nX-Name: caf\xc3\xa9\t\r\n\r\n",
        "folded": b"GET / HTTP/1.1\r\nX-A: 1\r\n  continued\r\n\r\n",
        "space-in-target": b"GET /a b HTTP/1.1\r\n\r\n",
    }


def response_seeds():
    """Responses to GET (first byte even) and HEAD (odd), valid and slightly broken."""
    get, head = b"\x00", b"\x01"
    return {
        "length": get + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: t\r\n\r\nhello",
        "length-list": get + b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\ncontent-length: 3\r\n\r\nabc",
        "length-conflict": get + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "length-sign": get + b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
        "chunked": get + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n",
        "te-and-length": get + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                               b"3\r\nabc\r\n0\r\n\r\n",
        "te-http10": get + b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
                           b"3\r\nabc\r\n0\r\n\r\n",
        "te-not-chunked": get + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nuntil close",
        "close-delimited": get + b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nuntil the end",
        "interim": get + b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "switch": get + b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "no-content": get + b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
        "not-modified": get + b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        "head": head + b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
        "bare-lf": get + b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
        "bad-name": get + b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
        "obs-fold": get + b"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n",
    }


def chunked_seeds():
    """Chunked bodies (after a fixed chunked head), valid and slightly broken."""
    return {
        "simple": b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
        "extensions": b"5;name=value\r\nhello\r\n3 ;q=\"a;b\"\r\nabc\r\n0;last\r\n\r\n",
        "upper-hex": b"1A\r\n" + b"x" * 26 + b"\r\n00\r\n\r\n",
        "trailers": b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n",
        "after": b"1\r\nx\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
        "lws": b"5 \t\r\nhello\r\n0\r\n\r\n",
        "leading-space": b" 5\r\nhello\r\n0\r\n\r\n",
        "lf-in-extension": b"5;a\nb\r\nhello\r\n0\r\n\r\n",
        "bare-lf-trailers": b"0\r\nx: y\n\n",
        "missing-crlf": b"3\r\nabcX\r\n0\r\n\r\n",
        "overflow": b"ffffffffffffffffff\r\n",
        "truncated": b"10\r\nshort",
    }


def main():
    for target, seeds in [("proxy_protocol", proxy_protocol_seeds()), ("sni", sni_seeds()),
                          ("request", request_seeds()), ("response", response_seeds()),
                          ("chunked", chunked_seeds())]:
        directory = HERE / "corpus" / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (directory / f"seed-{name}").write_bytes(data)
            print(f"{target}/seed-{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()

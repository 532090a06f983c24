#!/usr/bin/env python3
"""A minimal BitTorrent HTTP tracker for scripts/netem-swarm.sh.

aria2c and transmission-cli have no tracker of their own, and the harness
turns off DHT, PEX and local peer discovery so that BitTorrent peers find
each other the way hive's do: through one tracker. This one answers
/announce with every other peer of the torrent (compact form), and forgets
a peer on event=stopped or after 3 missed intervals. Standard library only.

    bt-tracker.py --listen 10.203.0.2:6969 [--interval 10]
"""
import argparse
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from threading import Lock


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, dict):
        return b"d" + b"".join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b"e"
    raise TypeError(type(v))


SWARMS = {}  # info_hash -> {(ip, port): (last seen, left)}
LOCK = Lock()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/announce":
            self.send_error(404)
            return
        q = {}
        for part in url.query.split("&"):
            k, _, v = part.partition("=")
            q[k] = urllib.parse.unquote_to_bytes(v)
        try:
            info_hash = q["info_hash"]
            port = int(q["port"])
            left = int(q.get("left", b"0"))
            numwant = int(q.get("numwant", b"50"))
        except (KeyError, ValueError):
            self.reply({"failure reason": "bad announce"})
            return
        me = (self.client_address[0], port)
        now = time.monotonic()
        with LOCK:
            swarm = SWARMS.setdefault(info_hash, {})
            for peer, (seen, _) in list(swarm.items()):
                if now - seen > 3 * ARGS.interval:
                    del swarm[peer]
            if q.get("event") == b"stopped":
                swarm.pop(me, None)
            else:
                swarm[me] = (now, left)
            others = [p for p in swarm if p != me][: max(numwant, 0)]
            seeds = sum(1 for _, left in swarm.values() if left == 0)
            body = {
                "interval": ARGS.interval,
                "min interval": ARGS.interval,
                "complete": seeds,
                "incomplete": len(swarm) - seeds,
                "peers": b"".join(IPv4Address(ip).packed + p.to_bytes(2, "big") for ip, p in others),
            }
        self.reply(body)

    def reply(self, body):
        data = bencode(body)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        sys.stderr.write("%.3f %s %s\n" % (time.time(), self.client_address[0], fmt % args))


parser = argparse.ArgumentParser()
parser.add_argument("--listen", required=True, help="HOST:PORT")
parser.add_argument("--interval", type=int, default=10, help="re-announce interval, seconds")
ARGS = parser.parse_args()
host, _, port = ARGS.listen.rpartition(":")
server = ThreadingHTTPServer((host, int(port)), Handler)
print("listening on %s:%d" % server.server_address, flush=True)
server.serve_forever()

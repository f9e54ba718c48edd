"""Streaming shards from a local directory, an HTTP server and an S3 API, side by side.

The 30 EEGMMI runs in ``../shared/data`` are written as shards (``neurofm prepare``'s
``write_shards``, 4 s windows, 16 MB shards), then streamed whole (every sample decoded, each
shard's sha256 checked while it is read) from: the local directory; Python's threaded HTTP
server on 127.0.0.1; moto's S3 server on 127.0.0.1 (an emulator of the S3 REST API) through
s3fs. Best of ``--repeats`` passes each, in turn; samples/s, MB/s, the ratio of each remote
source's throughput to the local one, and the number of GET requests per shard in one pass
over HTTP (1: each shard is read once). Both servers run on this machine, so the ratios
measure neurofm's remote read path (fsspec, buffering, hashing), not a network.
Writes ``<out>/remote_shards.json``.

usage: python benchmarks/remote_shards.py [--repeats 3] [--out docs]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from _common import data_dir

from neurofm.datasets import PrepareOptions, stream, write_shards
from neurofm.io import write_text_atomic
from neurofm.testing import free_port


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.path.rsplit("/", 1)[-1]
        CountingHandler.requests[name] = CountingHandler.requests.get(name, 0) + 1
        super().do_GET()

    def log_message(self, *args):
        pass


def one_pass(location) -> tuple[float, int]:
    start = time.perf_counter()
    n = sum(1 for _ in stream(location, None, shuffle_buffer=0, shuffle_shards=False, on_error="raise"))
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    root = data_dir() / "meeg" / "eegmmidb"
    inputs = sorted(root.glob("S00*/S00*R*.edf"))
    with tempfile.TemporaryDirectory() as tmp:
        served = Path(tmp)
        corpus = served / "corpus"
        write_shards(inputs, corpus, PrepareOptions(window_s=4.0, shard_size_mb=16.0), workers=1)
        shards = sorted(corpus.glob("shard-*.tar"))
        megabytes = sum(p.stat().st_size for p in shards) / 1e6
        http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      functools.partial(CountingHandler, directory=str(served)))
        threading.Thread(target=http_server.serve_forever, daemon=True).start()
        sources = {"local": corpus, "http": f"http://127.0.0.1:{http_server.server_address[1]}/corpus/"}
        try:
            import boto3
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
            port = free_port()
            s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            s3_server.start()
            os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                              AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
            client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
            client.create_bucket(Bucket="bench")
            for path in sorted(corpus.iterdir()):
                if path.is_file():
                    client.upload_file(str(path), "bench", f"corpus/{path.name}")
            sources["s3 (moto)"] = "s3://bench/corpus/"
        except ImportError:
            print("moto[server] or s3fs not installed: S3 not measured")
        one_pass(sources["http"])  # warm-up: imports, fsspec sessions
        CountingHandler.requests.clear()
        one_pass(sources["http"])
        gets = {name: CountingHandler.requests.get(name, 0) for name in (p.name for p in shards)}
        results = {}
        for name, location in sources.items():
            best = min(one_pass(location) for _ in range(args.repeats))
            results[name] = {"seconds": best[0], "samples": best[1], "samples_per_s": best[1] / best[0],
                             "mb_per_s": megabytes / best[0]}
        http_server.shutdown()
    local = results["local"]["samples_per_s"]
    for r in results.values():
        r["ratio_to_local"] = r["samples_per_s"] / local
    print(f"{len(shards)} shards, {megabytes:.1f} MB, {results['local']['samples']} windows "
          f"(30 EEGMMI runs), best of {args.repeats}")
    for name, r in results.items():
        print(f"  {name:10s} {r['seconds']:6.2f} s  {r['samples_per_s']:8.0f} windows/s  {r['mb_per_s']:7.1f} MB/s  "
              f"ratio to local {r['ratio_to_local']:.2f}")
    print(f"GET requests per shard in one pass over HTTP: {sorted(set(gets.values()))}")
    out = {"shards": len(shards), "megabytes": megabytes, "repeats": args.repeats, "sources": results,
           "http_gets_per_shard": gets, "cpu_count": os.cpu_count()}
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "remote_shards.json", json.dumps(out, indent=2))
    print(f"{args.out / 'remote_shards.json'}")


if __name__ == "__main__":
    main()

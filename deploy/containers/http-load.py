#!/usr/bin/env python3
"""HTTP load for `make test-compose` (compose-check.sh); Python's standard library only.

  http-load.py writes URL TOKEN COUNT CONCURRENCY IDS_FILE
      COUNT POSTs of new products to URL (write-api's /api/products) with the bearer TOKEN,
      CONCURRENCY at a time; the ids of the 201s go to IDS_FILE, one a line.
  http-load.py reads BASE_URL IDS_FILE STOP_FILE CONCURRENCY
      GETs of read-api's /api/products/{id} (ids from IDS_FILE) and /api/products?limit=5,
      CONCURRENCY at a time, until STOP_FILE exists.

Each prints one JSON line: the count per status code ("error" for no answer at all), and for
reads the count per X-Served-By. Exit status 0 whatever the answers: the caller judges them.
"""

import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse
from collections import Counter


def connection(url):
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.status = Counter()
        self.served_by = Counter()

    def add(self, status, served_by=None):
        with self.lock:
            self.status[str(status)] += 1
            if served_by:
                self.served_by[served_by] += 1


def writes(url, token, count, concurrency, ids_file):
    tally, ids, lock = Tally(), [], threading.Lock()
    todo = iter(range(count))
    path = urllib.parse.urlsplit(url).path
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}

    def worker():
        conn = connection(url)
        while True:
            with lock:
                n = next(todo, None)
            if n is None:
                break
            body = json.dumps({"name": f"compose-check {n}", "price": 1.25 + n, "stock": n})
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                data = response.read()
                tally.add(response.status)
                if response.status == 201:
                    with lock:
                        ids.append(json.loads(data)["data"]["id"])
            except (OSError, http.client.HTTPException):
                tally.add("error")
                conn.close()
                conn = connection(url)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(ids_file, "w", encoding="utf-8") as out:
        out.writelines(f"{i}\n" for i in ids)
    print(json.dumps({"status": tally.status, "seconds": round(time.monotonic() - started, 1)}))


def reads(base_url, ids_file, stop_file, concurrency):
    with open(ids_file, encoding="utf-8") as ids_in:
        ids = [line.strip() for line in ids_in if line.strip()]
    tally = Tally()

    def worker():
        conn = connection(base_url)
        while not os.path.exists(stop_file):
            if ids and random.random() < 0.8:
                path = f"/api/products/{random.choice(ids)}"
            else:
                path = "/api/products?limit=5"
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                tally.add(response.status, response.getheader("x-served-by"))
            except (OSError, http.client.HTTPException):
                tally.add("error")
                conn.close()
                conn = connection(base_url)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"status": tally.status, "served_by": tally.served_by}))


def main(args):
    if len(args) == 6 and args[0] == "writes":
        writes(args[1], args[2], int(args[3]), int(args[4]), args[5])
    elif len(args) == 5 and args[0] == "reads":
        reads(args[1], args[2], args[3], int(args[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
